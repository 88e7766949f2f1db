//! File handles (name_to_handle_at / open_by_handle_at), the identity an
//! origin xattr records, and filesystem UUIDs.

use super::*;

/// A file handle: what name_to_handle_at(2) returns for an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHandleBytes {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

const MAX_HANDLE_SZ: usize = 128;
/// `struct file_handle` header: handle_bytes (u32) and handle_type (i32).
const HANDLE_HEADER: usize = 8;

/// The file handle of the object behind `fd`; `Err(OPNOTSUPP)` when its
/// filesystem cannot make handles.
pub fn name_to_handle(fd: BorrowedFd<'_>) -> SysResult<FileHandleBytes> {
    // 8-byte aligned storage for the header and the largest handle.
    let mut storage = [0u64; (HANDLE_HEADER + MAX_HANDLE_SZ) / 8];
    let header = storage.as_mut_ptr().cast::<libc::file_handle>();
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `storage` is aligned for `file_handle` and holds its header plus
    // MAX_HANDLE_SZ bytes, which is what handle_bytes tells the kernel it may
    // write; the path is a valid empty C string used with AT_EMPTY_PATH.
    let rc = unsafe {
        (*header).handle_bytes = MAX_HANDLE_SZ as u32;
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            header,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    // SAFETY: the kernel filled in the header and `handle_bytes` bytes after it,
    // at most MAX_HANDLE_SZ, all inside `storage`.
    let (handle_type, bytes) = unsafe {
        let len = ((*header).handle_bytes as usize).min(MAX_HANDLE_SZ);
        let data = storage.as_ptr().cast::<u8>().add(HANDLE_HEADER);
        (
            (*header).handle_type,
            std::slice::from_raw_parts(data, len).to_vec(),
        )
    };
    Ok(FileHandleBytes { handle_type, bytes })
}

/// Opens the object a file handle names, on the filesystem of `mount_fd`.
/// Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(
    mount_fd: BorrowedFd<'_>,
    handle: &FileHandleBytes,
    flags: OFlags,
) -> SysResult<OwnedFd> {
    if handle.bytes.len() > MAX_HANDLE_SZ {
        return Err(Errno::INVAL);
    }
    let mut storage = [0u64; (HANDLE_HEADER + MAX_HANDLE_SZ) / 8];
    let header = storage.as_mut_ptr().cast::<libc::file_handle>();
    // SAFETY: `storage` is aligned for `file_handle` and large enough for its
    // header plus the handle bytes, which are copied right after the header.
    let fd = unsafe {
        (*header).handle_bytes = handle.bytes.len() as u32;
        (*header).handle_type = handle.handle_type;
        let data = storage.as_mut_ptr().cast::<u8>().add(HANDLE_HEADER);
        std::ptr::copy_nonoverlapping(handle.bytes.as_ptr(), data, handle.bytes.len());
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            header,
            (flags | OFlags::CLOEXEC).bits() as libc::c_int,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: open_by_handle_at returned a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The filesystem's UUID (FS_IOC_GETFSUUID), if it has one.
pub fn filesystem_uuid(dir: BorrowedFd<'_>) -> Option<[u8; 16]> {
    #[repr(C)]
    struct FsUuid2 {
        len: u8,
        uuid: [u8; 16],
    }
    // _IOR(0x15, 0, struct fsuuid2)
    const FS_IOC_GETFSUUID: libc::c_ulong = 0x8011_1500;
    let opened = open_dir_for_listing(dir).ok()?;
    let mut out = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: FS_IOC_GETFSUUID writes one `struct fsuuid2` (17 bytes, as
    // encoded in the request number) to the pointer, which is `out`.
    let rc = unsafe {
        libc::ioctl(
            opened.as_raw_fd(),
            FS_IOC_GETFSUUID as _,
            &mut out as *mut FsUuid2,
        )
    };
    (rc == 0 && out.len == 16 && out.uuid != [0; 16]).then_some(out.uuid)
}
