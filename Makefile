# Build and install cowfs.
#
#   make install PREFIX=/usr/local     build (release) and install; as root
#   make && sudo make install          the same, when cargo is the user's own
#   make uninstall PREFIX=/usr/local   remove what install put there
#   make docs                          write man/ and completions/ again from the clap definition
#   make deb                           a Debian package of the same files (PREFIX=/usr), with
#                                      cargo-deb (cargo install cargo-deb), in target/debian/
#
# What goes where (DESTDIR, for packagers, is put before every path):
#   $(BINDIR)/cowfs                               the program (container storage's mount_program)
#   $(MOUNT_HELPER_DIR)/mount.fuse.cowfs, mount.cowfs
#                                                 links to it, for mount -t fuse.cowfs and fstab
#   $(MANDIR)/man1/cowfs.1                        the man page
#   $(BASH_COMPLETION_DIR)/cowfs, $(ZSH_COMPLETION_DIR)/_cowfs, $(FISH_COMPLETION_DIR)/cowfs.fish
#
# mount(8) looks for its helpers in /sbin only: MOUNT_HELPER_DIR is /sbin for PREFIX /usr and
# /usr/local, else $(PREFIX)/sbin (a private prefix writes nothing outside it); MOUNT_HELPER_DIR=
# (empty) installs none. NO_BUILD=1 installs BIN as it is, without running cargo (a packager who
# built already; the tests, whose cargo holds the build lock).

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
BASH_COMPLETION_DIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPLETION_DIR ?= $(DATADIR)/zsh/site-functions
FISH_COMPLETION_DIR ?= $(DATADIR)/fish/vendor_completions.d
# mount(8) finds helpers in /sbin only: there for the system prefixes, else beside the program.
ifneq ($(filter /usr /usr/local,$(PREFIX)),)
MOUNT_HELPER_DIR ?= /sbin
else
MOUNT_HELPER_DIR ?= $(PREFIX)/sbin
endif
MOUNT_HELPERS := mount.fuse.cowfs mount.cowfs

CARGO ?= cargo
BIN ?= target/release/cowfs
NO_BUILD ?=
INSTALL ?= install

# The files of the tree that `make docs` writes (src/manual/ says how).
GENERATED := man/cowfs.1 completions/cowfs.bash completions/_cowfs completions/cowfs.fish

.PHONY: all build install uninstall docs deb

all: build

# Under sudo, cargo is often not on root's PATH: then the binary `make` built before is installed.
build:
ifeq ($(NO_BUILD),)
	@if command -v "$(CARGO)" >/dev/null 2>&1; then \
		echo "$(CARGO) build --release --locked"; $(CARGO) build --release --locked; \
	else \
		echo "make: $(CARGO) not found; installing $(BIN) as built before" >&2; \
	fi
endif
	@test -x "$(BIN)" || { echo "make: $(BIN) is missing; build it first (make build)" >&2; exit 1; }

install: build
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(MANDIR)/man1" \
		"$(DESTDIR)$(BASH_COMPLETION_DIR)" "$(DESTDIR)$(ZSH_COMPLETION_DIR)" \
		"$(DESTDIR)$(FISH_COMPLETION_DIR)"
	$(INSTALL) -m 0755 "$(BIN)" "$(DESTDIR)$(BINDIR)/cowfs"
	$(INSTALL) -m 0644 man/cowfs.1 "$(DESTDIR)$(MANDIR)/man1/cowfs.1"
	$(INSTALL) -m 0644 completions/cowfs.bash "$(DESTDIR)$(BASH_COMPLETION_DIR)/cowfs"
	$(INSTALL) -m 0644 completions/_cowfs "$(DESTDIR)$(ZSH_COMPLETION_DIR)/_cowfs"
	$(INSTALL) -m 0644 completions/cowfs.fish "$(DESTDIR)$(FISH_COMPLETION_DIR)/cowfs.fish"
ifneq ($(MOUNT_HELPER_DIR),)
	$(INSTALL) -d "$(DESTDIR)$(MOUNT_HELPER_DIR)"
	for helper in $(MOUNT_HELPERS); do \
		ln -sfn "$(BINDIR)/cowfs" "$(DESTDIR)$(MOUNT_HELPER_DIR)/$$helper" || exit 1; \
	done
endif

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/cowfs" "$(DESTDIR)$(MANDIR)/man1/cowfs.1" \
		"$(DESTDIR)$(BASH_COMPLETION_DIR)/cowfs" "$(DESTDIR)$(ZSH_COMPLETION_DIR)/_cowfs" \
		"$(DESTDIR)$(FISH_COMPLETION_DIR)/cowfs.fish"
ifneq ($(MOUNT_HELPER_DIR),)
	for helper in $(MOUNT_HELPERS); do \
		link="$(DESTDIR)$(MOUNT_HELPER_DIR)/$$helper"; \
		if [ "$$(readlink "$$link")" = "$(BINDIR)/cowfs" ]; then rm -f "$$link" || exit 1; fi; \
	done
endif

docs: build
	@mkdir -p man completions
	"$(BIN)" generate man > man/cowfs.1
	"$(BIN)" generate bash > completions/cowfs.bash
	"$(BIN)" generate zsh > completions/_cowfs
	"$(BIN)" generate fish > completions/cowfs.fish

# The assets are listed in Cargo.toml's [package.metadata.deb].
deb:
	$(CARGO) deb --locked
