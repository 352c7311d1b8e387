//! Response body framing: raw bytes against a declared length, chunked
//! encoding, or close-delimited.

use crate::response::Framing;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The app wrote more bytes than its Content-Length.
    TooLong,
    /// The app ended the response before its Content-Length was reached.
    TooShort,
}

#[derive(Debug)]
pub struct BodyEncoder {
    framing: Framing,
    written: u64,
}

impl BodyEncoder {
    pub fn new(framing: Framing) -> Self {
        BodyEncoder {
            framing,
            written: 0,
        }
    }

    /// Appends `data` framed for the wire. Over-long data is cut at the
    /// declared length and reported, so the connection can be closed.
    pub fn write(&mut self, out: &mut Vec<u8>, data: &[u8]) -> Result<(), BodyError> {
        match self.framing {
            Framing::None => Ok(()),
            Framing::UntilClose | Framing::Raw => {
                out.extend_from_slice(data);
                Ok(())
            }
            Framing::Length(n) => {
                let room = n.saturating_sub(self.written);
                let take = usize::try_from(room).map_or(data.len(), |r| r.min(data.len()));
                out.extend_from_slice(&data[..take]);
                self.written += take as u64;
                if take < data.len() {
                    Err(BodyError::TooLong)
                } else {
                    Ok(())
                }
            }
            Framing::Chunked => {
                if !data.is_empty() {
                    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                Ok(())
            }
        }
    }

    /// Appends the end of the body.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        match self.framing {
            Framing::Chunked => {
                out.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            Framing::Length(n) if self.written < n => Err(BodyError::TooShort),
            _ => Ok(()),
        }
    }

    /// The app frames the bytes itself (a Node `ServerResponse`).
    pub fn is_raw(&self) -> bool {
        self.framing == Framing::Raw
    }

    /// Whether the connection must close after this body to delimit it.
    pub fn ends_with_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_frames_each_write_and_skips_empty_ones() {
        let mut out = Vec::new();
        let mut enc = BodyEncoder::new(Framing::Chunked);
        enc.write(&mut out, b"hello").unwrap();
        enc.write(&mut out, b"").unwrap();
        enc.write(&mut out, &[b'x'; 26]).unwrap();
        enc.finish(&mut out).unwrap();
        let mut expected = b"5\r\nhello\r\n1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn length_is_enforced_both_ways() {
        let mut out = Vec::new();
        let mut enc = BodyEncoder::new(Framing::Length(3));
        assert_eq!(enc.write(&mut out, b"abcd"), Err(BodyError::TooLong));
        assert_eq!(out, b"abc");
        let mut enc = BodyEncoder::new(Framing::Length(3));
        enc.write(&mut out, b"ab").unwrap();
        assert_eq!(enc.finish(&mut out), Err(BodyError::TooShort));
    }

    #[test]
    fn no_body_framing_writes_nothing() {
        let mut out = Vec::new();
        let mut enc = BodyEncoder::new(Framing::None);
        enc.write(&mut out, b"ignored").unwrap();
        enc.finish(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
