//! `client idle`: holds N connections open for the RSS-per-connection row.
//!
//! Connections are opened in batches (blocking connect, then one echo round
//! trip on each, so the server has accepted every connection and built its
//! per-connection state), never more than a listen backlog's worth at a
//! time. Then `READY` goes to stdout and the connections stay open, silent,
//! until stdin is closed.

use std::io::{Read, Write};
use std::time::Duration;

use crate::client::wait_for_stdin_eof;
use crate::net::{Addr, Stream};

const PROBE: &[u8] = b"netbench idle probe";
const BATCH: usize = 64;

pub fn run(addr: &Addr, conns: usize) -> Result<(), String> {
    let mut streams: Vec<Stream> = Vec::with_capacity(conns);
    while streams.len() < conns {
        let first = streams.len();
        for _ in 0..BATCH.min(conns - first) {
            let i = streams.len();
            let s = Stream::connect(addr).map_err(|e| format!("connection {i}: connect: {e}"))?;
            s.set_timeouts(Duration::from_secs(30))
                .map_err(|e| format!("set timeouts: {e}"))?;
            streams.push(s);
        }
        for (i, s) in streams[first..].iter_mut().enumerate() {
            s.write_all(PROBE)
                .map_err(|e| format!("connection {}: write: {e}", first + i))?;
        }
        for (i, s) in streams[first..].iter_mut().enumerate() {
            let mut buf = [0u8; PROBE.len()];
            s.read_exact(&mut buf)
                .map_err(|e| format!("connection {}: read: {e}", first + i))?;
            if buf != PROBE {
                return Err(format!("connection {}: wrong echo {buf:?}", first + i));
            }
        }
    }
    println!("READY {conns}");
    wait_for_stdin_eof();
    drop(streams);
    Ok(())
}
