//! The canary of `make memcheck` (scripts/memcheck.sh): a tiny cdylib built
//! with the same sanitizer flags as the extension and loaded the same way
//! (ctypes, in an interpreter with the ASan runtime preloaded). Each function
//! makes one deliberate memory error; memcheck.sh checks that each one is
//! reported before it trusts a clean run of the real suite.
#![allow(unsafe_code)]

use std::hint::black_box;

/// Writes one byte past the end of a heap buffer: a heap-buffer-overflow.
#[no_mangle]
pub extern "C" fn canary_overflow() -> u8 {
    let buf: Vec<u8> = black_box(vec![0u8; 16]);
    let p = buf.as_ptr().cast_mut();
    // SAFETY: none, on purpose: index 16 is one past the end of `buf`.
    unsafe {
        p.add(black_box(16)).write_volatile(1);
        p.add(16).read_volatile()
    }
}

/// Reads a freed heap block: a heap-use-after-free.
#[no_mangle]
pub extern "C" fn canary_use_after_free() -> u8 {
    let b = black_box(Box::new(7u8));
    let p: *const u8 = &*b;
    drop(b);
    // SAFETY: none, on purpose: `p` points into the block just freed.
    unsafe { p.read_volatile() }
}

/// Allocates blocks and forgets them: direct leaks, which the LeakSanitizer
/// suppressions must not hide (their stacks are pure Rust, like ferroloop's).
#[no_mangle]
pub extern "C" fn canary_leak() {
    for i in 0..64usize {
        let v: Vec<u8> = black_box(vec![0xa5; 100 + i]);
        std::mem::forget(v);
    }
}
