//! Connection read buffer: an always-initialised byte array with a filled
//! window, written by hand because it sits under every read of the hot path.
//!
//! `BytesMut` hands out uninitialised spare capacity, and futures-io's
//! `AsyncRead` wants `&mut [u8]`; zero-filling before every read would cost
//! a memset per request. Here the whole allocation is zeroed once when it is
//! created or grown, so reads go straight into it with no `unsafe` and no
//! per-read fill. Consumed bytes are dropped by moving a start index; the
//! window is moved to the front only when the tail is too small.

/// Initial size of a buffer: enough for a typical request head and small
/// enough that idle keep-alive connections stay cheap.
pub const INITIAL: usize = 4096;

#[derive(Debug)]
pub struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        Self::with_capacity(INITIAL)
    }
}

impl ReadBuf {
    /// A buffer with no storage yet (allocates on first [`ReadBuf::spare`]).
    pub fn empty() -> ReadBuf {
        ReadBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Bytes of storage held.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    pub fn with_capacity(n: usize) -> ReadBuf {
        ReadBuf {
            data: vec![0; n],
            start: 0,
            end: 0,
        }
    }

    /// The bytes received and not yet consumed.
    #[inline]
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// The same, writable (the request parser normalises the path in
    /// place).
    #[inline]
    pub fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Drops `n` bytes from the front.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to read into, at least `min` bytes (growing up to
    /// `max_total` filled + free bytes). Returns an empty slice when the
    /// buffer is at `max_total` and full.
    pub fn spare(&mut self, min: usize, max_total: usize) -> &mut [u8] {
        if self.data.len() - self.end < min {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < min && self.data.len() < max_total {
                let want = (self.end + min)
                    .max(self.data.len() * 2)
                    .max(INITIAL)
                    .min(max_total);
                self.data.resize(want, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of the spare area as filled.
    #[inline]
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }

    /// Returns to the initial size when empty and grown beyond it, so a
    /// connection that once carried a large message does not keep its memory.
    pub fn shrink(&mut self) {
        if self.is_empty() && self.data.len() > INITIAL {
            self.data = vec![0; INITIAL];
            self.start = 0;
            self.end = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_consume_compact_grow() {
        let mut b = ReadBuf::with_capacity(8);
        let s = b.spare(4, 64);
        s[..6].copy_from_slice(b"abcdef");
        b.commit(6);
        assert_eq!(b.filled(), b"abcdef");
        b.consume(4);
        assert_eq!(b.filled(), b"ef");
        // Needs 7 free bytes: compacts, then grows.
        let s = b.spare(7, 64);
        assert!(s.len() >= 7);
        assert_eq!(b.filled(), b"ef");
        b.consume(2);
        assert!(b.is_empty());
        // Capped at max_total.
        let mut b = ReadBuf::with_capacity(8);
        b.commit(8);
        assert!(b.spare(1, 8).is_empty());
    }
}
