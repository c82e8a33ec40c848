//! The reference servers against netbench's own (verifying) clients: every
//! echo is compared byte for byte and every HTTP response with the fixed
//! one, so `errors == 0` with requests done means the server answered every
//! request whole; the TLS servers at 1 KiB, at 100 KiB (several records per
//! request) and over whole connections.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_netbench");

/// A self-signed EC certificate for `localhost`, made with the openssl CLI;
/// None (the test is skipped) when there is none.
fn certificate(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then_some((cert, key))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `netbench server <args>` and returns it with the address it printed.
fn start(args: &[&str]) -> (Server, String) {
    let mut child = Command::new(EXE)
        .args(["server"])
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut line).expect("READY line");
    let addr = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("no READY: {line:?}"))
        .trim()
        .to_string();
    (Server(child), addr)
}

/// Runs the client (`--ca` for the TLS modes); returns its JSON line.
fn client(mode: &str, addr: &str, ca: Option<&Path>, size: Option<usize>) -> String {
    let mut cmd = Command::new(EXE);
    cmd.args([
        "client",
        mode,
        "--addr",
        addr,
        "--conns",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0",
    ]);
    if let Some(size) = size {
        cmd.args(["--size", &size.to_string()]);
    }
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    let out = cmd.output().expect("run the client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().last().unwrap_or_default().to_string()
}

fn field<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\": ");
    let start = json.find(&key).unwrap_or_else(|| panic!("no {name} in {json}")) + key.len();
    let rest = &json[start..];
    rest[..rest.find([',', '}']).unwrap_or(rest.len())].trim()
}

fn check_server(server_args: &[&str]) {
    let dir = std::env::temp_dir().join(format!("netbench-tls-{}-{}", std::process::id(), server_args.join("-")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let Some((cert, key)) = certificate(&dir) else {
        eprintln!("skipped: no openssl CLI to make a certificate");
        return;
    };
    let (cert_s, key_s) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    let mut args = server_args.to_vec();
    args.extend(["--cert", &cert_s, "--key", &key_s]);
    let (_server, addr) = start(&args);
    for (mode, size) in [("tls", 1024), ("tls", 100 * 1024), ("tls-handshake", 16)] {
        check_run(&client(mode, &addr, Some(&cert), Some(size)), &format!("{mode} {size}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// No client error, and requests done.
fn check_run(json: &str, what: &str) {
    assert_eq!(field(json, "errors"), "0", "{what}: {json}");
    let requests: u64 = field(json, "requests").parse().expect("requests");
    assert!(requests > 0, "{what}: no request done: {json}");
}

#[test]
fn echo_server_echoes() {
    let (_server, addr) = start(&["echo"]);
    for size in [1024, 100 * 1024] {
        check_run(&client("echo", &addr, None, Some(size)), &format!("echo {size}"));
    }
}

#[test]
fn http_server_answers() {
    let (_server, addr) = start(&["http"]);
    check_run(&client("http", &addr, None, None), "http");
}

#[test]
fn rustls_server_echoes() {
    check_server(&["tls"]);
}

#[test]
fn openssl_server_echoes_on_the_socket() {
    check_server(&["tls-openssl", "--bio", "fd"]);
}

#[test]
fn openssl_server_echoes_reading_the_socket() {
    check_server(&["tls-openssl", "--bio", "socket"]);
}

#[test]
fn openssl_server_echoes_through_memory_bios() {
    check_server(&["tls-openssl", "--bio", "mem"]);
}
