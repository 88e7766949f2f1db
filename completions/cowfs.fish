# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cowfs_global_optspecs
    string join \n workdir= o= f/foreground threads= log-level= log-file= pid-file= h/help V/version
end

function __fish_cowfs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cowfs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cowfs_using_subcommand
    set -l cmd (__fish_cowfs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cowfs -n "__fish_cowfs_needs_command" -l workdir -d 'Work dir on the upper\'s filesystem [default: <dir of UPPER>/.<name of UPPER>.cowfs-work]' -r -F
complete -c cowfs -n "__fish_cowfs_needs_command" -s o -d 'Mount options: lowerdir=, upperdir=, workdir=, ro, nodev, nosuid, volatile, timeout=, passthrough=on|off|all, io_uring=auto|on|off, open=daemon|kernel, ... (see cowfs(1))' -r
complete -c cowfs -n "__fish_cowfs_needs_command" -l threads -d 'Threads serving requests [default: 2 per CPU, at least 4]' -r
complete -c cowfs -n "__fish_cowfs_needs_command" -l log-level -d 'Log level (overrides RUST_LOG)' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c cowfs -n "__fish_cowfs_needs_command" -l log-file -d 'Write logs to this file (a daemon has no stderr)' -r -F
complete -c cowfs -n "__fish_cowfs_needs_command" -l pid-file -d 'Write the daemon\'s pid here once the mount is live' -r -F
complete -c cowfs -n "__fish_cowfs_needs_command" -s f -l foreground -d 'Stay attached instead of running as a background daemon'
complete -c cowfs -n "__fish_cowfs_needs_command" -s h -l help -d 'Print help'
complete -c cowfs -n "__fish_cowfs_needs_command" -s V -l version -d 'Print version'
complete -c cowfs -n "__fish_cowfs_needs_command" -a "mount" -d 'Mount layers: LOWER[:LOWER...] [UPPER] MOUNTPOINT (leftmost lower is the top one)'
complete -c cowfs -n "__fish_cowfs_needs_command" -a "umount" -d 'Unmount a cowfs mount'
complete -c cowfs -n "__fish_cowfs_needs_command" -a "diff" -d 'List what an upper dir changes over its lowers, one `A|C|D PATH` a line (no mount)'
complete -c cowfs -n "__fish_cowfs_needs_command" -a "export" -d 'Write an upper dir\'s changes as an OCI image layer (tar), to stdout or -o FILE'
complete -c cowfs -n "__fish_cowfs_needs_command" -a "generate" -d 'Print the man page (man) or a shell\'s completion script (bash, zsh, fish) on stdout'
complete -c cowfs -n "__fish_cowfs_needs_command" -a "stats" -d 'Show the live figures of a cowfs mount: requests per operation, copy-ups, whiteouts, table sizes'
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -l workdir -d 'Work dir on the upper\'s filesystem [default: <dir of UPPER>/.<name of UPPER>.cowfs-work]' -r -F
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -s o -d 'Mount options: lowerdir=, upperdir=, workdir=, ro, nodev, nosuid, volatile, timeout=, passthrough=on|off|all, io_uring=auto|on|off, open=daemon|kernel, ... (see cowfs(1))' -r
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -l threads -d 'Threads serving requests [default: 2 per CPU, at least 4]' -r
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -l log-level -d 'Log level (overrides RUST_LOG)' -r -f -a "off\t''
error\t''
warn\t''
info\t''
debug\t''
trace\t''"
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -l log-file -d 'Write logs to this file (a daemon has no stderr)' -r -F
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -l pid-file -d 'Write the daemon\'s pid here once the mount is live' -r -F
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -s f -l foreground -d 'Stay attached instead of running as a background daemon'
complete -c cowfs -n "__fish_cowfs_using_subcommand mount" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cowfs -n "__fish_cowfs_using_subcommand umount" -s h -l help -d 'Print help'
complete -c cowfs -n "__fish_cowfs_using_subcommand diff" -l workdir -d 'The upper\'s work dir [default: <dir of UPPER>/.<name of UPPER>.cowfs-work]' -r -F
complete -c cowfs -n "__fish_cowfs_using_subcommand diff" -l json -d 'One JSON object per path, with what changed'
complete -c cowfs -n "__fish_cowfs_using_subcommand diff" -s h -l help -d 'Print help'
complete -c cowfs -n "__fish_cowfs_using_subcommand export" -l workdir -d 'The upper\'s work dir [default: <dir of UPPER>/.<name of UPPER>.cowfs-work]' -r -F
complete -c cowfs -n "__fish_cowfs_using_subcommand export" -s o -l output -d 'Write the layer here (made whole under a temporary name first) instead of to stdout' -r -F
complete -c cowfs -n "__fish_cowfs_using_subcommand export" -l compress -d 'Compress the layer' -r -f -a "none\t''
gzip\t''
zstd\t''"
complete -c cowfs -n "__fish_cowfs_using_subcommand export" -s h -l help -d 'Print help'
complete -c cowfs -n "__fish_cowfs_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c cowfs -n "__fish_cowfs_using_subcommand stats" -l watch -d 'Print again every SECONDS until interrupted' -r
complete -c cowfs -n "__fish_cowfs_using_subcommand stats" -l json -d 'One JSON object (a line) instead of text'
complete -c cowfs -n "__fish_cowfs_using_subcommand stats" -s h -l help -d 'Print help (see more with \'--help\')'
