//! Reading extended attributes of an open file or directory.

use std::os::fd::AsFd;

use crate::manifest::Xattrs;

/// All extended attributes of `fd`, sorted by name; `None` when it has none. Filesystems
/// without xattr support count as having none.
pub(crate) fn read_xattrs(fd: impl AsFd) -> std::io::Result<Option<Box<Xattrs>>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::flistxattr(&fd, &mut names[..]) {
            Ok(len) => break len,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    let mut pairs: Xattrs = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(|_| std::io::ErrorKind::InvalidData)?;
        let mut value = vec![0u8; 256];
        let value_len = loop {
            match rustix::fs::fgetxattr(&fd, cname.as_c_str(), &mut value[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                // Removed between the listing and the read.
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(e.into()),
            }
        };
        if value_len != usize::MAX {
            value.truncate(value_len);
            pairs.push((name.into(), value.into_boxed_slice()));
        }
    }
    pairs.sort();
    Ok((!pairs.is_empty()).then(|| Box::new(pairs)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_what_was_set() {
        let file = tempfile::NamedTempFile::new().unwrap();
        if rustix::fs::fsetxattr(file.as_file(), "user.b", b"2", rustix::fs::XattrFlags::empty()).is_err() {
            eprintln!("note: filesystem of the temp dir has no user xattrs; nothing to check");
            return;
        }
        rustix::fs::fsetxattr(file.as_file(), "user.a", b"one", rustix::fs::XattrFlags::empty()).unwrap();
        let xattrs = super::read_xattrs(file.as_file()).unwrap().unwrap();
        let names: Vec<&[u8]> = xattrs.iter().map(|(n, _)| &n[..]).collect();
        assert_eq!(names, [&b"user.a"[..], b"user.b"]);
        assert_eq!(&xattrs[0].1[..], b"one");
    }
}
