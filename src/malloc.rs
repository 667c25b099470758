//! The C allocator's settings for the agent process, made once when `run` starts.
//!
//! Owns: glibc's two thresholds for giving memory back to the kernel. Must never: run on a
//! hot path, or override what an operator set through glibc's own environment variables.
//!
//! Why: librdkafka builds every produce request in buffers of up to `batch.size` (1 MB by
//! default) on its broker thread and frees them when the response arrives. With glibc's
//! default, self-adjusting thresholds the top of that thread's heap was handed back to the
//! kernel (`MADV_DONTNEED`) after nearly every request, so the next one faulted in and
//! zeroed fresh pages: at 10,000 entries/s page faults and `clear_page` were the broker
//! thread's largest cost after copying, and its share of the agent's CPU fell from 19.8 % to
//! 12.3 % without them. Same-run effect (`scripts/bench-live.sh`, 3 × 15 s at 10,000
//! entries/s): 16.2 → 14.7 % of a core, anonymous memory 7.0 → 7.4 MiB (#19); draining the
//! 1M-entry backlog, CPU did not change.
//!
//! Fixed values also switch off glibc's adjustment. Allocations up to 1 MiB (librdkafka's
//! request buffers at live rates) come from the heap, and a heap keeps up to 2 MiB free at
//! its top; larger ones (a multi-MB entry and its copies) keep their own mapping and go back
//! to the kernel when freed. 4 and 8 MiB saved no more CPU and kept the copies of 3 MB core
//! dumps in every thread's heap: 77 MiB anonymous against 18 MiB
//! (`fleet::memory_stays_bounded_with_multi_megabyte_entries`); trimming alone (at 4 MiB,
//! the mmap threshold left at 128 KiB) saved nothing.

/// Allocations above this size get their own mapping (glibc's default: 128 KiB, growing
/// with what is freed).
const MMAP_THRESHOLD: i32 = 1 << 20;
/// Free memory at the top of a heap beyond this size goes back to the kernel.
const TRIM_THRESHOLD: i32 = 2 << 20;

/// Applies the thresholds unless the environment already tunes glibc's allocator.
pub(crate) fn tune() {
    if operator_tuned(|k| std::env::var_os(k)) {
        tracing::debug!("glibc's allocator is tuned by the environment; leaving it as set");
        return;
    }
    for (name, param, value) in [
        ("M_MMAP_THRESHOLD", param::MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("M_TRIM_THRESHOLD", param::TRIM_THRESHOLD, TRIM_THRESHOLD),
    ] {
        if !set(param, value) {
            // Not fatal: the agent works with glibc's defaults, only with more page faults.
            tracing::warn!(
                name,
                value,
                "the C allocator refused a setting; using its default"
            );
        }
    }
}

/// Whether an operator set glibc's allocator through its environment (the tunables, or the
/// older `MALLOC_*_` variables): theirs wins.
fn operator_tuned(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    var("GLIBC_TUNABLES").is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."))
        || [
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_TOP_PAD_",
        ]
        .iter()
        .any(|k| var(k).is_some())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod param {
    pub(super) const MMAP_THRESHOLD: i32 = libc::M_MMAP_THRESHOLD;
    pub(super) const TRIM_THRESHOLD: i32 = libc::M_TRIM_THRESHOLD;
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(param: i32, value: i32) -> bool {
    // SAFETY: mallopt only changes the allocator's parameters; glibc takes its own locks,
    // so it may be called at any time from any thread, and no pointer crosses the call.
    unsafe { libc::mallopt(param, value) == 1 }
}

/// Other C libraries have no such thresholds (or no `mallopt`): nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod param {
    pub(super) const MMAP_THRESHOLD: i32 = 0;
    pub(super) const TRIM_THRESHOLD: i32 = 0;
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_: i32, _: i32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn an_operators_setting_wins() {
        assert!(!operator_tuned(env(&[])));
        assert!(!operator_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0"
        )])));
        assert!(operator_tuned(env(&[(
            "GLIBC_TUNABLES",
            "glibc.pthread.rseq=0:glibc.malloc.arena_max=2"
        )])));
        assert!(operator_tuned(env(&[("MALLOC_TRIM_THRESHOLD_", "0")])));
    }

    #[test]
    fn glibc_accepts_the_thresholds() {
        assert!(set(param::MMAP_THRESHOLD, MMAP_THRESHOLD));
        assert!(set(param::TRIM_THRESHOLD, TRIM_THRESHOLD));
    }
}
