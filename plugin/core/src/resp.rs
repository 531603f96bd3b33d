//! A command packed straight into the wire format (RESP) from borrowed arguments, with no
//! intermediate command object: small arguments are copied into the connection's send
//! buffer (reused, so no allocation per put), and values of [`BORROW_FROM`] bytes or more
//! are not copied at all: they are written to the socket from where they are, guest
//! memory ([`Packer`], `Store::query_transaction`).

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

/// Values at least this long are written from where they are instead of being copied
/// into the send buffer: a copy of a large value, and the page faults of a send buffer
/// that first grows to its size (the first put of every process), cost more than one
/// more write call.
pub const BORROW_FROM: usize = 64 * 1024;

/// A request as the pieces to write in order: spans of the send buffer and large values
/// borrowed in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    Buffered(std::ops::Range<usize>),
    Borrowed(&'a [u8]),
}

/// Packs commands into a send buffer and a list of [`Piece`]s.
pub struct Packer<'b, 'a> {
    buf: &'b mut Vec<u8>,
    pieces: Vec<Piece<'a>>,
    /// Where the buffered span not yet in `pieces` starts.
    mark: usize,
}

impl<'b, 'a> Packer<'b, 'a> {
    /// A packer appending to `buf` (cleared first).
    pub fn new(buf: &'b mut Vec<u8>) -> Packer<'b, 'a> {
        buf.clear();
        Packer {
            buf,
            pieces: Vec::new(),
            mark: 0,
        }
    }

    /// Adds one command.
    pub fn command(&mut self, args: &[Arg<'a>]) {
        self.command_parts(&[args]);
    }

    /// Adds one command whose arguments are `parts` one after the other.
    pub fn command_parts(&mut self, parts: &[&[Arg<'a>]]) {
        header(self.buf, b'*', parts.iter().map(|p| p.len()).sum());
        for a in parts.iter().flat_map(|p| p.iter()) {
            match *a {
                Arg::Bytes(b) if b.len() >= BORROW_FROM => {
                    header(self.buf, b'$', b.len());
                    self.close();
                    self.pieces.push(Piece::Borrowed(b));
                    self.buf.extend_from_slice(b"\r\n");
                }
                other => pack_arg(self.buf, other),
            }
        }
    }

    fn close(&mut self) {
        if self.mark < self.buf.len() {
            self.pieces.push(Piece::Buffered(self.mark..self.buf.len()));
            self.mark = self.buf.len();
        }
    }

    /// The pieces to write, in order, and the buffer their spans refer to.
    pub fn finish(mut self) -> (Vec<Piece<'a>>, &'b [u8]) {
        self.close();
        (self.pieces, self.buf)
    }
}

fn pack_arg(buf: &mut Vec<u8>, a: Arg<'_>) {
    let mut digits = [0u8; 20];
    let bytes: &[u8] = match a {
        Arg::Bytes(b) => b,
        Arg::Int(n) => decimal(n, &mut digits),
    };
    header(buf, b'$', bytes.len());
    buf.extend_from_slice(bytes);
    buf.extend_from_slice(b"\r\n");
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
    for a in args {
        pack_arg(buf, *a);
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
    fn large_values_are_borrowed_not_copied() {
        let big = vec![3u8; BORROW_FROM];
        let small = vec![4u8; BORROW_FROM - 1];
        let cmds: [Vec<Arg<'_>>; 3] = [
            vec!["MULTI".into()],
            vec![
                "HSET".into(),
                "k".into(),
                "a".into(),
                big.as_slice().into(),
                "b".into(),
                small.as_slice().into(),
                "c".into(),
                big.as_slice().into(),
            ],
            vec!["EXEC".into()],
        ];
        let mut whole = Vec::new();
        for c in &cmds {
            pack(&mut whole, c);
        }
        let mut buf = Vec::new();
        let mut packer = Packer::new(&mut buf);
        for c in &cmds {
            packer.command(c);
        }
        let (pieces, buffered) = packer.finish();
        assert!(
            buffered.len() < 2 * BORROW_FROM,
            "the large values were copied"
        );
        let borrowed = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Borrowed(_)))
            .count();
        assert_eq!(borrowed, 2);
        let mut sent = Vec::new();
        for p in &pieces {
            match p {
                Piece::Buffered(r) => {
                    assert!(!r.is_empty());
                    sent.extend_from_slice(&buffered[r.clone()]);
                }
                Piece::Borrowed(b) => sent.extend_from_slice(b),
            }
        }
        assert_eq!(sent, whole);
    }

    #[test]
    fn appends_to_what_the_buffer_holds() {
        let mut buf = b"x".to_vec();
        pack(&mut buf, &["PING".into()]);
        assert_eq!(buf, b"x*1\r\n$4\r\nPING\r\n");
    }
}
