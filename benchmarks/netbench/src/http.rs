//! The minimal HTTP/1.1 the benchmarks speak: the one fixed response every
//! server sends (the Python servers send these exact bytes too) and a
//! head/length parser shared by the client and the reference server.

/// What every HTTP server in the benchmark answers to every request.
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, world!";

/// The length of the message at the start of `buf` (head plus
/// Content-Length bytes of body), `Ok(None)` while the head is incomplete.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("HTTP head longer than 64 KiB".to_string());
        }
        return Ok(None);
    };
    let head = &buf[..head_end];
    let mut body = 0usize;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            body = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("bad Content-Length {:?}", String::from_utf8_lossy(value)))?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err("chunked bodies are not supported".to_string());
        }
    }
    Ok(Some(head_end + 4 + body))
}

/// Whether the head of `msg` has `Connection: close`.
pub fn wants_close(msg: &[u8]) -> bool {
    msg.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.len() > 11 && line[..11].eq_ignore_ascii_case(b"connection:") && {
            let v = String::from_utf8_lossy(&line[11..]);
            v.trim().eq_ignore_ascii_case("close")
        }
    })
}

/// Whether two messages are the same: head equal but for ASCII case (header
/// names are case-insensitive; uvicorn, for one, lowercases them), body equal
/// byte for byte.
pub fn same_response(got: &[u8], want: &[u8]) -> bool {
    match (find(got, b"\r\n\r\n"), find(want, b"\r\n\r\n")) {
        (Some(g), Some(w)) => got[..g].eq_ignore_ascii_case(&want[..w]) && got[g..] == want[w..],
        _ => false,
    }
}

/// The status code of a response head.
pub fn status(msg: &[u8]) -> Option<u16> {
    let line = msg.split(|&b| b == b'\r').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_fixed_response() {
        assert_eq!(message_len(RESPONSE), Ok(Some(RESPONSE.len())));
        assert_eq!(message_len(&RESPONSE[..20]), Ok(None));
        assert_eq!(status(RESPONSE), Some(200));
        assert!(!wants_close(RESPONSE));
    }

    #[test]
    fn header_case_does_not_matter_but_the_body_does() {
        let lower = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\ncontent-type: text/plain\r\n\r\nHello, world!";
        assert!(same_response(lower, RESPONSE));
        assert!(!same_response(&lower.to_ascii_lowercase(), RESPONSE));
        assert!(!same_response(&RESPONSE[..RESPONSE.len() - 1], RESPONSE));
    }

    #[test]
    fn request_without_body() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET";
        assert_eq!(message_len(req), Ok(Some(req.len() - 3)));
        assert!(wants_close(req));
    }
}
