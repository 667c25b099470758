//! Opening a journal namespace on whatever libsystemd the host has.
//!
//! `sd_journal_open_namespace` arrived in libsystemd 245; RHEL 8 has 239. Linking it would
//! make the dynamic loader refuse to start the agent on such a host, whatever its
//! configuration, so it is looked up when a namespace is asked for, and its absence is a
//! configuration error naming the way around it. Owns the only `dlsym` of the agent.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use anyhow::{Result, bail};
use foreign_types::ForeignType;
use systemd::journal::Journal;

type SdJournal = <Journal as ForeignType>::CType;
type OpenNamespace = unsafe extern "C" fn(*mut *mut SdJournal, *const c_char, c_int) -> c_int;

const OPEN_NAMESPACE: &CStr = c"sd_journal_open_namespace";

/// A function of the libsystemd the process loaded, if it has one by that name.
fn libsystemd_function(name: &CStr) -> Option<*mut c_void> {
    // safety: dlsym with RTLD_DEFAULT only searches the objects already loaded (libsystemd
    // is linked), reads the NUL-terminated `name`, and has no other effect.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!f.is_null()).then_some(f)
}

/// `sd_journal_open_namespace(ns, 0)`: the namespace's journal as journalctl
/// `--namespace=ns` reads it.
pub(super) fn open(ns: &str) -> Result<Journal> {
    let Some(f) = libsystemd_function(OPEN_NAMESPACE) else {
        bail!("{}", unsupported(ns));
    };
    // safety: the symbol is libsystemd's sd_journal_open_namespace, whose C signature
    // (sd_journal **ret, const char *namespace, int flags) -> int is `OpenNamespace`.
    let open: OpenNamespace = unsafe { std::mem::transmute::<*mut c_void, OpenNamespace>(f) };
    let ns = CString::new(ns)?;
    let mut j: *mut SdJournal = std::ptr::null_mut();
    // safety: `j` is a valid place for the result; `ns` is NUL-terminated and outlives
    // the call; flags 0.
    let r = unsafe { open(&mut j, ns.as_ptr(), 0) };
    if r < 0 || j.is_null() {
        return Err(std::io::Error::from_raw_os_error(-r).into());
    }
    // safety: on success libsystemd handed us a new journal handle that nothing else owns;
    // `Journal` closes it once (sd_journal_close on drop).
    Ok(unsafe { Journal::from_ptr(j) })
}

fn unsupported(ns: &str) -> String {
    format!(
        "journal.namespace needs libsystemd 245 or newer, and this host's has no sd_journal_open_namespace (systemd 239 on RHEL 8, for one): read the namespace's directory instead, journal.directory = \"/var/log/journal/<machine-id>.{ns}\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_libsystemd_lacks_is_found_missing_and_named() {
        assert!(libsystemd_function(c"sd_journal_open_no_such_function").is_none());
        assert!(libsystemd_function(c"sd_journal_open").is_some());
        let why = unsupported("web");
        assert!(
            why.contains("libsystemd 245") && why.contains(".web\""),
            "{why}"
        );
    }

    /// A namespace no journald ever wrote opens empty (libsystemd's answer), through the
    /// function found at run time.
    #[test]
    fn a_namespace_opens_through_the_function_found_at_run_time() {
        let mut j = open("jk-test-no-such-namespace").unwrap();
        assert!(j.next().unwrap() == 0);
    }
}
