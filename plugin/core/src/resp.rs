//! A command packed straight into the wire format (RESP) from borrowed arguments: the put
//! path's values go from guest memory into the connection's send buffer in one copy,
//! with no intermediate command object and, as the buffer is reused, no allocation per put
//! (`Store::query_transaction`).

/// One argument of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    Bytes(&'a [u8]),
    Int(u64),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Arg<'a> {
        Arg::Bytes(s.as_bytes())
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(b: &'a [u8]) -> Arg<'a> {
        Arg::Bytes(b)
    }
}

impl From<u64> for Arg<'_> {
    fn from(n: u64) -> Self {
        Arg::Int(n)
    }
}

/// The same command as a redis-rs command (for pipelines and the runtime's connections).
pub fn cmd(args: &[Arg<'_>]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for a in args {
        match a {
            Arg::Bytes(b) => cmd.arg(*b),
            Arg::Int(n) => cmd.arg(*n),
        };
    }
    cmd
}

/// Appends `*<count>\r\n` then each argument as a bulk string `$<len>\r\n<bytes>\r\n` to
/// `buf`.
pub fn pack(buf: &mut Vec<u8>, args: &[Arg<'_>]) {
    let payload: usize = args
        .iter()
        .map(|a| match a {
            Arg::Bytes(b) => b.len() + 16,
            Arg::Int(_) => 36,
        })
        .sum();
    buf.reserve(payload + 16);
    header(buf, b'*', args.len());
    let mut digits = [0u8; 20];
    for a in args {
        let bytes: &[u8] = match a {
            Arg::Bytes(b) => b,
            Arg::Int(n) => decimal(*n, &mut digits),
        };
        header(buf, b'$', bytes.len());
        buf.extend_from_slice(bytes);
        buf.extend_from_slice(b"\r\n");
    }
}

fn header(buf: &mut Vec<u8>, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    buf.push(kind);
    buf.extend_from_slice(decimal(n as u64, &mut digits));
    buf.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written into the end of `digits`.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_as_redis_rs_does() {
        let value = vec![7u8; 70_000];
        let mut buf = Vec::new();
        pack(
            &mut buf,
            &[
                "EVAL".into(),
                "return 1".into(),
                Arg::Int(0),
                Arg::Int(u64::MAX),
                Arg::Int(10),
                value.as_slice().into(),
                Arg::Bytes(b""),
            ],
        );
        let mut cmd = redis::cmd("EVAL");
        cmd.arg("return 1")
            .arg(0u64)
            .arg(u64::MAX)
            .arg(10u64)
            .arg(&value)
            .arg(b"");
        assert_eq!(buf, cmd.get_packed_command());
        let args = [
            "HSET".into(),
            "k".into(),
            Arg::Int(3),
            value.as_slice().into(),
        ];
        let mut buf = Vec::new();
        pack(&mut buf, &args);
        assert_eq!(buf, super::cmd(&args).get_packed_command());
    }

    #[test]
    fn appends_to_what_the_buffer_holds() {
        let mut buf = b"x".to_vec();
        pack(&mut buf, &["PING".into()]);
        assert_eq!(buf, b"x*1\r\n$4\r\nPING\r\n");
    }
}
