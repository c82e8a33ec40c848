//! What keeps the bytes of a queued write alive.
//!
//! asyncio (3.12+) queues the caller's object itself: an immutable `bytes`
//! is referenced, not copied; a `bytearray` or `memoryview` stays the
//! caller's memory (a later change to its contents changes what is sent).
//! ferroloop holds a buffer export of such objects, which also pins their
//! size (see docs/compatibility.md); on 3.11, whose transport copies into a
//! `bytearray`, the bytes are copied.
//!
//! # Invariants
//! - The memory a queued chunk points into is owned or pinned by its `Keep`.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::py::buffer::HeldBuffer;
use crate::py::gc::{GcStop, Visitor};
use crate::py::held::Held;

/// The owner of a queued chunk's memory (held for its `Drop`: the queue
/// reads the memory through the chunk's own pointer).
#[derive(Debug)]
#[allow(dead_code, reason = "the payloads are kept alive, never read")]
pub(crate) enum Keep {
    /// An immutable `bytes` object.
    Bytes(Held<PyAny>),
    /// A held buffer export of a mutable object.
    Export(HeldBuffer),
    /// A private copy.
    Owned(Vec<u8>),
}

impl Keep {
    pub(crate) fn visit(&self, v: &Visitor<'_, '_>) -> Result<(), GcStop> {
        match self {
            Keep::Bytes(b) => v.visit(Some(&**b)),
            Keep::Export(_) | Keep::Owned(_) => Ok(()),
        }
    }
}

/// Append `data[offset..]` to `queue`, keeping (not copying) it when that is
/// safe and asyncio does not copy either.
pub(crate) fn enqueue(
    queue: &mut ferroloop_core::buffer::WriteQueue<Keep>,
    data: &Bound<'_, PyAny>,
    offset: usize,
    copy_mutable: bool,
) -> PyResult<()> {
    if let Ok(b) = data.cast::<PyBytes>() {
        let bytes = b.as_bytes();
        if offset >= bytes.len() {
            return Ok(());
        }
        let rest = &bytes[offset..];
        // SAFETY: a bytes object's memory is immutable and lives as long as
        // the object, which the Keep references.
        unsafe { queue.push(Keep::Bytes(Held::new(data.clone().unbind())), rest.as_ptr(), rest.len()) };
        return Ok(());
    }
    let held = HeldBuffer::new(data)?;
    if offset >= held.len() {
        return Ok(());
    }
    if copy_mutable {
        let copy = held.as_slice()[offset..].to_vec();
        drop(held);
        let (ptr, len) = (copy.as_ptr(), copy.len());
        // SAFETY: a Vec's heap buffer does not move when the Vec moves.
        unsafe { queue.push(Keep::Owned(copy), ptr, len) };
    } else {
        // SAFETY: the held export pins the memory and its size.
        let (ptr, len) = unsafe { (held.as_ptr().add(offset), held.len() - offset) };
        // SAFETY: as above; the export moves into the queue with the pointer.
        unsafe { queue.push(Keep::Export(held), ptr, len) };
    }
    Ok(())
}
