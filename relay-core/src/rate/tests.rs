//! Buckets, limiters and origin windows on virtual time.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::epoch::epoch;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rate(per_sec: u32, burst: u32) -> Rate {
    Rate::new(per_sec, burst).unwrap()
}

#[test]
fn a_rate_needs_both_parts() {
    assert_eq!(Rate::new(0, 5), None);
    assert_eq!(Rate::new(5, 0), None);
    let r = rate(10, 3);
    assert_eq!((r.per_sec(), r.burst()), (10, 3));
}

#[test]
fn bucket_table() {
    let t0 = epoch();
    let r = rate(10, 3);
    let mut bucket = TokenBucket::default();
    assert!(bucket.is_full(t0));
    // (at, expected): the burst, then one token every 100 ms.
    let table: [(u64, Result<(), Duration>); 10] = [
        (0, Ok(())),
        (0, Ok(())),
        (0, Ok(())),
        (0, Err(ms(100))),
        (40, Err(ms(60))),
        (100, Ok(())),
        (100, Err(ms(100))),
        (199, Err(ms(1))),
        (200, Ok(())),
        (250, Err(ms(50))),
    ];
    for (i, (at, expected)) in table.into_iter().enumerate() {
        assert_eq!(bucket.take(t0 + ms(at), r), expected, "step {i} at {at} ms");
    }
    assert!(!bucket.is_full(t0 + ms(499)));
    // Quiet until full: the whole burst again.
    assert!(bucket.is_full(t0 + ms(500)));
    for _ in 0..3 {
        assert_eq!(bucket.take(t0 + ms(500), r), Ok(()));
    }
    assert_eq!(bucket.take(t0 + ms(500), r), Err(ms(100)));
}

#[test]
fn a_burst_of_one_spaces_requests() {
    let t0 = epoch();
    let r = rate(4, 1);
    let mut bucket = TokenBucket::default();
    assert_eq!(bucket.take(t0, r), Ok(()));
    assert_eq!(bucket.take(t0 + ms(100), r), Err(ms(150)));
    assert_eq!(bucket.take(t0 + ms(250), r), Ok(()));
    // Time that passed while full is not saved up.
    assert_eq!(bucket.take(t0 + ms(5_000), r), Ok(()));
    assert_eq!(bucket.take(t0 + ms(5_000), r), Err(ms(250)));
}

proptest! {
    /// Over any stretch of time, a bucket lets through at most its burst
    /// plus what the rate brings back in that time; and the wait it names
    /// is exact: asked again then, it lets the request through.
    #[test]
    fn a_bucket_never_lets_more_through_and_names_the_right_wait(
        per_sec in 1u32..50,
        burst in 1u32..20,
        gaps in proptest::collection::vec(0u64..200, 1..200),
    ) {
        let t0 = epoch();
        let r = rate(per_sec, burst);
        let mut bucket = TokenBucket::default();
        let mut at = t0;
        let mut passed: Vec<Instant> = Vec::new();
        for gap in gaps {
            at += ms(gap);
            match bucket.take(at, r) {
                Ok(()) => passed.push(at),
                Err(wait) => {
                    prop_assert!(wait > Duration::ZERO);
                    let mut copy = bucket;
                    prop_assert_eq!(copy.take(at + wait, r), Ok(()));
                    if let Some(shorter) = wait.checked_sub(Duration::from_nanos(1)) {
                        let mut copy = bucket;
                        prop_assert!(copy.take(at + shorter, r).is_err());
                    }
                }
            }
        }
        let interval = Duration::from_secs(1) / per_sec;
        for (i, start) in passed.iter().enumerate() {
            for (j, end) in passed.iter().enumerate().skip(i) {
                let through = (j - i + 1) as u128;
                let allowed = u128::from(burst) + (*end - *start).as_nanos() / interval.as_nanos();
                prop_assert!(through <= allowed, "{through} through in {:?}", *end - *start);
            }
        }
    }
}

#[test]
fn each_key_has_its_own_bucket() {
    let t0 = epoch();
    let mut limiter = RateLimiter::new(rate(1, 2), 16);
    assert!(limiter.is_empty());
    for _ in 0..2 {
        assert_eq!(limiter.take(t0, &"a"), Ok(()));
    }
    assert_eq!(limiter.take(t0, &"a"), Err(ms(1_000)));
    assert_eq!(limiter.take(t0, &"b"), Ok(()));
    assert_eq!(limiter.len(), 2);
    assert_eq!(limiter.take(t0 + ms(1_000), &"a"), Ok(()));
}

#[test]
fn a_full_limiter_forgets_full_buckets_first() {
    let t0 = epoch();
    let mut limiter = RateLimiter::new(rate(1, 1), 8);
    for key in 0..8 {
        assert_eq!(limiter.take(t0, &key), Ok(()));
    }
    assert_eq!(limiter.len(), 8);
    // Key 0 is busy again; every other bucket is full by then.
    let later = t0 + ms(1_500);
    assert_eq!(limiter.take(later, &0), Ok(()));
    assert_eq!(limiter.take(later, &100), Ok(()));
    assert_eq!(limiter.len(), 2, "only the busy key and the new one");
    assert_eq!(limiter.take(later, &0), Err(ms(1_000)), "still counted");
}

#[test]
fn a_full_limiter_of_busy_keys_forgets_those_nearest_full() {
    let t0 = epoch();
    let mut limiter = RateLimiter::new(rate(1, 1), 8);
    // Key k took its token at k ms: key 0 is the nearest full.
    for key in 0..8u64 {
        assert_eq!(limiter.take(t0 + ms(key), &key), Ok(()));
    }
    let now = t0 + ms(10);
    assert_eq!(limiter.take(now, &100), Ok(()));
    // Down to three quarters (6), then the new key.
    assert_eq!(limiter.len(), 7);
    assert!(!limiter.buckets.contains_key(&0) && !limiter.buckets.contains_key(&1));
    assert!(limiter.take(now, &2).is_err(), "kept");
    assert!(limiter.take(now, &7).is_err(), "kept");
    assert_eq!(limiter.take(now, &0), Ok(()), "forgotten: a fresh bucket");
}

/// Whatever the keys, the table never holds more than its bound, even
/// when every bucket is busy at once.
#[test]
fn the_limiter_is_bounded() {
    const MAX: usize = 1_000;
    let t0 = epoch();
    let mut limiter = RateLimiter::new(rate(1, 1), MAX);
    for key in 0..20 * MAX {
        let _ = limiter.take(t0, &key);
        assert!(limiter.len() <= MAX, "{} keys after {key}", limiter.len());
    }
    assert!(limiter.len() > MAX / 2, "it holds what it can");
}

#[test]
fn origin_windows_count_each_origin_once() {
    let t0 = epoch();
    let hour = Duration::from_secs(3_600);
    let mut windows = OriginWindows::new(3, hour, 16);
    for origin in ["a", "b", "c", "a", "b", "c", "c"] {
        assert_eq!(windows.bring(t0, &1, origin), Ok(()), "{origin}");
    }
    // A fourth, ten minutes in: until the hour is over.
    let later = t0 + Duration::from_secs(600);
    assert_eq!(
        windows.bring(later, &1, "d"),
        Err(Duration::from_secs(3_000))
    );
    assert_eq!(windows.bring(later, &1, "a"), Ok(()), "known: still fine");
    // Another key has a window of its own.
    assert_eq!(windows.bring(later, &2, "d"), Ok(()));
    // A new window: d fits, and a, b, c count anew.
    let next = t0 + hour;
    for origin in ["d", "a", "b"] {
        assert_eq!(windows.bring(next, &1, origin), Ok(()), "{origin}");
    }
    assert!(windows.bring(next, &1, "c").is_err());
}

#[test]
fn origin_windows_are_bounded() {
    const MAX: usize = 100;
    let t0 = epoch();
    let hour = Duration::from_secs(3_600);
    let mut windows = OriginWindows::new(100, hour, MAX);
    for key in 0..10 * MAX {
        assert_eq!(windows.bring(t0 + ms(key as u64), &key, "a"), Ok(()));
        assert!(windows.len() <= MAX);
    }
    // Ended windows go first: a full table of windows an hour old takes a
    // new key by forgetting them all.
    let mut windows = OriginWindows::new(1, hour, 4);
    for key in 0..4 {
        windows.bring(t0, &key, "a").unwrap();
    }
    windows.bring(t0 + hour, &9, "a").unwrap();
    assert_eq!(windows.len(), 1);
}

#[test]
fn client_keys() {
    let key = |s: &str| client_key(s.parse().unwrap()).to_string();
    assert_eq!(key("203.0.113.7"), "203.0.113.7");
    assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
    assert_eq!(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
    assert_eq!(key("2001:db8:1:2::ffff"), "2001:db8:1:2::");
    assert_eq!(key("::1"), "::");
}

#[test]
fn make_room_keeps_three_quarters_and_the_newest() {
    let t0 = epoch();
    let mut map: HashMap<u32, Option<Instant>> =
        (0..8).map(|k| (k, Some(t0 + ms(k.into())))).collect();
    make_room(&mut map, 8, |_| false, |v| *v);
    let mut kept: Vec<u32> = map.keys().copied().collect();
    kept.sort_unstable();
    assert_eq!(kept, [2, 3, 4, 5, 6, 7]);
    // Equal ages: exactly the excess goes.
    let mut map: HashMap<u32, Option<Instant>> = (0..8).map(|k| (k, Some(t0))).collect();
    make_room(&mut map, 8, |_| false, |v| *v);
    assert_eq!(map.len(), 6);
    // Not full: untouched.
    let mut map: HashMap<u32, Option<Instant>> = (0..7).map(|k| (k, None)).collect();
    make_room(&mut map, 8, |_| true, |v| *v);
    assert_eq!(map.len(), 7);
    // A bound of one: room for the next.
    let mut map: HashMap<u32, Option<Instant>> = HashMap::from([(1, Some(t0))]);
    make_room(&mut map, 1, |_| false, |v| *v);
    assert!(map.is_empty());
}
