//! A token bucket in integer milli-tokens, with the clock passed in.
//!
//! `rate` tokens per second refill the bucket up to `burst` tokens (Amazon
//! API Gateway's throttle: steady rate plus burst = bucket size). Integer
//! arithmetic keeps long simulations exact: no drift from float rounding.

/// Milli-tokens per token.
pub const MILLI: u64 = 1000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A token bucket. Times are nanoseconds on any monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens per second.
    rate: u64,
    /// Capacity, in milli-tokens.
    capacity: u64,
    /// Available, in milli-tokens.
    tokens: u64,
    /// Lent out as shard leases and not yet settled: counted against the
    /// capacity, so tokens plus outstanding leases never exceed one bucket.
    lent: u64,
    /// Refill remainder below one milli-token, in milli-token-nanoseconds
    /// per second, so slow rates still refill exactly.
    carry: u128,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, burst: u64, now_ns: u64) -> TokenBucket {
        let capacity = burst.saturating_mul(MILLI);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            lent: 0,
            carry: 0,
            last_ns: now_ns,
        }
    }

    /// A bucket holding `tokens` milli-tokens (at most its capacity): a
    /// quota restored with part of its period already used.
    pub fn with_tokens(rate: u64, burst: u64, tokens: u64, now_ns: u64) -> TokenBucket {
        let mut b = TokenBucket::new(rate, burst, now_ns);
        b.tokens = tokens.min(b.capacity);
        b
    }

    /// Refills to capacity at once (a quota's new period); tokens still
    /// lent stay counted against it.
    pub fn fill(&mut self) {
        self.tokens = self.capacity.saturating_sub(self.lent);
        self.carry = 0;
    }

    /// Tokens per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Milli-tokens lent and not yet settled.
    pub fn lent(&self) -> u64 {
        self.lent
    }

    /// Capacity in milli-tokens.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Available milli-tokens after refilling to `now_ns`.
    pub fn available(&mut self, now_ns: u64) -> u64 {
        self.refill(now_ns);
        self.tokens
    }

    /// Adds what `rate` earned since the last refill, up to the capacity.
    pub fn refill(&mut self, now_ns: u64) {
        if now_ns <= self.last_ns {
            return;
        }
        let elapsed = u128::from(now_ns - self.last_ns);
        self.last_ns = now_ns;
        // milli-tokens = elapsed_ns * rate * MILLI / 1e9, remainder carried.
        let earned = elapsed * u128::from(self.rate) * u128::from(MILLI) + self.carry;
        let whole = earned / NANOS_PER_SEC;
        self.carry = earned % NANOS_PER_SEC;
        let whole = u64::try_from(whole).unwrap_or(u64::MAX);
        let room = self.capacity.saturating_sub(self.lent);
        self.tokens = self.tokens.saturating_add(whole).min(room);
        if self.tokens >= room {
            self.carry = 0;
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ns: u64) -> bool {
        self.refill(now_ns);
        if self.tokens >= MILLI {
            self.tokens -= MILLI;
            true
        } else {
            false
        }
    }

    /// Takes up to `max` milli-tokens (for leasing); returns how many.
    pub fn take_up_to(&mut self, now_ns: u64, max: u64) -> u64 {
        self.refill(now_ns);
        let n = self.tokens.min(max);
        self.tokens -= n;
        n
    }

    /// Returns milli-tokens taken earlier; what would overflow the
    /// capacity is dropped (never creates tokens).
    pub fn give_back(&mut self, n: u64) {
        let room = self.capacity.saturating_sub(self.lent);
        self.tokens = self.tokens.saturating_add(n).min(room);
    }

    /// Lends up to `max` milli-tokens as a lease; they stay counted against
    /// the capacity until [`TokenBucket::settle`].
    pub fn lend(&mut self, now_ns: u64, max: u64) -> u64 {
        let n = self.take_up_to(now_ns, max);
        self.lent = self.lent.saturating_add(n);
        n
    }

    /// Settles leases: `lent` milli-tokens were lent, `unused` of them come
    /// back; the rest were spent.
    pub fn settle(&mut self, lent: u64, unused: u64) {
        self.lent = self.lent.saturating_sub(lent);
        self.give_back(unused.min(lent));
    }

    /// Nanoseconds until one token is available (0 if one is now).
    pub fn wait_for_token_ns(&self) -> u64 {
        if self.tokens >= MILLI {
            return 0;
        }
        if self.rate == 0 {
            return u64::MAX;
        }
        let missing = u128::from(MILLI - self.tokens) * NANOS_PER_SEC;
        let per_ns = u128::from(self.rate) * u128::from(MILLI);
        let ns = (missing.saturating_sub(self.carry)).div_ceil(per_ns);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn starts_full_and_refills_at_rate() {
        let mut b = TokenBucket::new(10, 5, 0);
        for _ in 0..5 {
            assert!(b.try_take(0));
        }
        assert!(!b.try_take(0));
        // 10/s: one token per 100 ms.
        assert!(!b.try_take(99 * MS));
        assert!(b.try_take(100 * MS));
        assert!(!b.try_take(150 * MS));
        assert_eq!(b.wait_for_token_ns(), 50 * MS);
    }

    #[test]
    fn never_exceeds_capacity() {
        let mut b = TokenBucket::new(1000, 3, 0);
        assert_eq!(b.available(10_000 * MS), 3 * MILLI);
    }

    #[test]
    fn slow_rates_refill_exactly_over_many_small_steps() {
        let mut b = TokenBucket::new(3, 1, 0);
        assert!(b.try_take(0));
        // 3/s in 1 µs steps for a little over one second: 3 tokens earned
        // (the fraction of a milli-token pending when the bucket fills is
        // dropped, as a full bucket earns nothing).
        let mut admitted = 0;
        for t in 1..=1_010_000u64 {
            if b.try_take(t * 1000) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3);
    }

    #[test]
    fn rate_zero_blocks() {
        let mut b = TokenBucket::new(0, 0, 0);
        assert!(!b.try_take(1_000_000 * MS));
        assert_eq!(b.wait_for_token_ns(), u64::MAX);
    }

    #[test]
    fn leasing_and_giving_back_conserve_tokens() {
        let mut b = TokenBucket::new(0, 10, 0);
        let got = b.take_up_to(0, 4 * MILLI);
        assert_eq!(got, 4 * MILLI);
        b.give_back(got);
        assert_eq!(b.available(0), 10 * MILLI);
        b.give_back(5 * MILLI);
        assert_eq!(
            b.available(0),
            10 * MILLI,
            "giving back never creates tokens"
        );
    }
}
