//! The TLS record framing of a byte stream, followed as it is written into
//! an OpenSSL memory BIO, to tell whether `SSL_read` could find a complete
//! record that it has not read yet.
//!
//! Every TLS record starts with a 5-byte header: content type (20 to 24),
//! protocol major version 3, minor version, and a big-endian body length.
//! OpenSSL (without read-ahead, Python's setting) takes exactly one record
//! at a time out of the BIO, so the bytes it has consumed are the bytes
//! written minus those still pending in the BIO; a complete record is unread
//! when one ends beyond that point. A stream that does not look like TLS
//! records (an SSLv2 hello, another content type, a body longer than TLS
//! 1.3's 2^14 + 256) turns the tracking off: [`TlsRecords::unread_record`] is
//! then always true, so the caller reads as if it tracked nothing.

/// Largest record body tracked: TLS 1.3's limit (2^14 + 256). TLS 1.2 allows
/// 2^14 + 2048; a peer that sends such records turns tracking off.
pub const MAX_TRACKED_BODY: u32 = 16384 + 256;

/// The framing state of the bytes written so far.
#[derive(Default, Debug, Clone)]
pub struct TlsRecords {
    /// Bytes written so far.
    fed: u64,
    /// Offset (in `fed` terms) just after the last complete record.
    complete_end: u64,
    hdr: [u8; 5],
    hdr_len: u8,
    body_left: u32,
    untracked: bool,
}

impl TlsRecords {
    /// Follow `data`, the next bytes written into the BIO.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.untracked {
            return;
        }
        while !data.is_empty() {
            if self.body_left == 0 && self.hdr_len < 5 {
                let at = self.hdr_len as usize;
                let take = (5 - at).min(data.len());
                self.hdr[at..at + take].copy_from_slice(&data[..take]);
                self.hdr_len += take as u8;
                self.fed += take as u64;
                data = &data[take..];
                if self.hdr_len < 5 {
                    return;
                }
                let len = u32::from(u16::from_be_bytes([self.hdr[3], self.hdr[4]]));
                if !(20..=24).contains(&self.hdr[0]) || self.hdr[1] != 3 || len > MAX_TRACKED_BODY {
                    self.untracked = true;
                    return;
                }
                self.body_left = len;
                if len == 0 {
                    self.record_done();
                }
                continue;
            }
            let take = (self.body_left as usize).min(data.len());
            self.body_left -= take as u32;
            self.fed += take as u64;
            data = &data[take..];
            if self.body_left == 0 {
                self.record_done();
            }
        }
    }

    fn record_done(&mut self) {
        self.complete_end = self.fed;
        self.hdr_len = 0;
    }

    /// Stop tracking: every later [`unread_record`](Self::unread_record) is true.
    pub fn untrack(&mut self) {
        self.untracked = true;
    }

    /// Whether tracking is off.
    #[must_use]
    pub fn is_untracked(&self) -> bool {
        self.untracked
    }

    /// Whether a complete record may be left unread, given the bytes still
    /// pending in the BIO.
    #[must_use]
    pub fn unread_record(&self, bio_pending: u64) -> bool {
        self.untracked || self.complete_end > self.fed.saturating_sub(bio_pending)
    }
}

#[cfg(test)]
mod tests {
    use super::TlsRecords;

    fn record(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3, (len >> 8) as u8, len as u8];
        r.resize(5 + len, 0xAB);
        r
    }

    #[test]
    fn complete_records_are_seen_whatever_the_split() {
        let stream: Vec<u8> = [record(23, 100), record(23, 0), record(21, 2)].concat();
        for chunk in 1..stream.len() {
            let mut t = TlsRecords::default();
            let mut fed = 0;
            for part in stream.chunks(chunk) {
                t.feed(part);
                fed += part.len();
                // Nothing read yet: a complete record is unread iff one has fully arrived.
                assert_eq!(t.unread_record(fed as u64), fed >= 105, "chunk {chunk}, fed {fed}");
            }
            // Everything consumed by the SSL object: nothing unread.
            assert!(!t.unread_record(0));
            assert!(!t.is_untracked());
        }
    }

    #[test]
    fn a_partial_record_held_by_the_ssl_object_counts_once_complete() {
        let mut t = TlsRecords::default();
        let r = record(23, 50);
        t.feed(&r[..20]);
        // The SSL object pulled the 20 bytes (BIO empty): nothing complete.
        assert!(!t.unread_record(0));
        t.feed(&r[20..]);
        // 35 bytes in the BIO complete the record it holds the start of.
        assert!(t.unread_record(35));
    }

    #[test]
    fn non_tls_bytes_turn_tracking_off() {
        for bad in [
            vec![0x80, 0x2e, 1, 3, 1],
            vec![23, 2, 0, 0, 1],
            record(25, 1),
            vec![23, 3, 3, 0x48, 0x01],
        ] {
            let mut t = TlsRecords::default();
            t.feed(&bad);
            assert!(t.is_untracked());
            assert!(t.unread_record(0));
        }
    }
}
