//! Failed attempts: transient outcomes, backoff, 429 waits, blacklist.

use super::*;

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let config = OutboundConfig {
        failures_until_blacklist: 100,
        ..config()
    };
    let waits = |seed: [u8; 32]| -> Vec<Duration> {
        let mut h = Harness::with_seed(config.clone(), seed);
        let mut sent = only_transmit(&h.pdu(DEST, 1));
        let mut waits = Vec::new();
        for n in 1..=16u32 {
            let outputs = h.answer(sent.attempt, HttpOutcome::Timeout);
            let at = retry_at(&outputs).unwrap();
            let wait = at - h.now;
            waits.push(wait);
            let state = h.out.retry_state(&name(DEST));
            assert_eq!(state.failed_attempts, n);
            assert_eq!(
                state.next_retry,
                Some(h.unix.saturating_add_ms(wait.as_millis() as u64))
            );
            assert_eq!(
                changes(&outputs).last(),
                Some(&OutboundChange::Retry {
                    destination: name(DEST),
                    state,
                })
            );
            assert_eq!(h.out.poll_timeout(), Some(at));
            // Early timeouts do nothing.
            assert!(h.advance(wait - Duration::from_millis(1)).is_empty());
            assert!(h.advance(Duration::ZERO).is_empty());
            sent = only_transmit(&h.advance(Duration::from_millis(1)));
        }
        waits
    };
    let a = waits([7; 32]);
    let cap = Duration::from_secs(3600);
    for (i, wait) in a.iter().enumerate() {
        let nominal = 2.0 * 2f64.powi(i as i32);
        let secs = wait.as_secs_f64();
        if nominal * 0.8 >= 3600.0 {
            assert_eq!(*wait, cap, "attempt {}", i + 1);
        } else {
            assert!(secs >= nominal * 0.8 - 1e-9, "attempt {}: {secs}", i + 1);
            // Below ×1.4 before rounding up to whole milliseconds.
            assert!(
                secs <= nominal * 1.4 && *wait <= cap,
                "attempt {}: {secs}",
                i + 1
            );
            assert_eq!(wait.subsec_nanos() % 1_000_000, 0);
        }
    }
    // Jitter varies, and only the seed decides it.
    let ratios: Vec<f64> = (0..8)
        .map(|i| a[i].as_secs_f64() / (2.0 * 2f64.powi(i as i32)))
        .collect();
    assert!(ratios.iter().any(|r| (r - ratios[0]).abs() > 0.01));
    assert_eq!(a, waits([7; 32]));
    assert_ne!(a, waits([8; 32]));
}

#[test]
fn blacklisted_after_16_failed_attempts_until_peer_alive() {
    let mut h = Harness::new(config());
    let first = only_transmit(&h.pdu(DEST, 1));
    let mut sent = first.clone();
    for n in 1..=16 {
        let outputs = h.answer(sent.attempt, status(500));
        if n < 16 {
            assert!(retry_at(&outputs).is_some());
            sent = only_transmit(&h.advance_to_timeout());
        } else {
            assert_eq!(retry_at(&outputs), None);
            assert_eq!(kinds(&outputs)[2..], ["attempt_failed", "blacklisted"]);
        }
    }
    let state = h.out.retry_state(&name(DEST));
    assert!(state.blacklisted);
    assert_eq!((state.failed_attempts, state.next_retry), (16, None));
    assert_eq!(h.out.poll_timeout(), None);
    assert!(h.advance(Duration::from_secs(86_400 * 10)).is_empty());
    assert_eq!(kinds(&h.pdu(DEST, 2)), ["persist enqueued"]);
    assert_eq!(h.out.queued(&name(DEST)), 2);
    // Seen alive: the same transaction goes out at once; still offline.
    let outputs = h.peer_alive(DEST);
    assert_eq!(kinds(&outputs), ["persist retry", "transmit direct"]);
    assert_eq!(only_transmit(&outputs).request, first.request);
    assert_eq!(
        h.out.retry_state(&name(DEST)),
        RetryState {
            direct_failures: 16,
            ..RetryState::default()
        }
    );
    assert!(h.out.is_offline(&name(DEST)));
    let outputs = h.answer(transmits(&outputs)[0].attempt, ok());
    assert_eq!(
        kinds(&outputs),
        [
            "persist txn_finished",
            "persist retry",
            "back_online",
            "delivered",
            "persist txn_started",
            "transmit direct"
        ]
    );
    assert_eq!(h.out.retry_state(&name(DEST)), RetryState::default());
    assert!(!h.out.is_offline(&name(DEST)));
}

#[test]
fn transient_outcomes_are_retried() {
    let cases = [
        status(408),
        status(429),
        status(500),
        status(502),
        status(503),
        status(504),
        status(302),
        status(100),
        HttpOutcome::Timeout,
        HttpOutcome::ConnectionFailed("dns".into()),
    ];
    for outcome in cases {
        let mut h = Harness::new(config());
        let sent = only_transmit(&h.pdu(DEST, 1));
        let outputs = h.answer(sent.attempt, outcome.clone());
        let errors: Vec<_> = events(&outputs)
            .into_iter()
            .filter_map(|e| match e {
                Event::AttemptFailed { errors, .. } => Some(errors),
                _ => None,
            })
            .collect();
        assert_eq!(
            errors,
            [vec![(Target::Direct, outcome.describe())]],
            "{outcome:?}"
        );
        let state = h.out.retry_state(&name(DEST));
        assert_eq!((state.direct_failures, state.failed_attempts), (1, 1));
        let again = only_transmit(&h.advance_to_timeout());
        assert_eq!(again.request, sent.request, "{outcome:?}");
    }
}

#[test]
fn a_429_wait_is_honoured() {
    let base = Duration::from_secs(2);
    let cases: [(HttpOutcome, Option<Duration>); 4] = [
        (limited(600_000), Some(Duration::from_secs(600))),
        // Past the cap: a 429 may ask for more.
        (limited(7_200_000), Some(Duration::from_secs(7200))),
        (
            HttpOutcome::Response {
                status: 429,
                body: b"{}".to_vec(),
                retry_after: Some("30".into()),
            },
            Some(Duration::from_secs(30)),
        ),
        // Shorter than the backoff: the backoff wins.
        (limited(10), None),
    ];
    for (outcome, expected) in cases {
        let mut h = Harness::new(config());
        let sent = only_transmit(&h.pdu(DEST, 1));
        let outputs = h.answer(sent.attempt, outcome);
        let wait = retry_at(&outputs).unwrap() - h.now;
        match expected {
            Some(expected) => assert_eq!(wait, expected),
            None => assert!(wait >= base.mul_f64(0.8) && wait < base.mul_f64(1.4)),
        }
    }
    // A relay's 429 counts too.
    let mut h = with_relays(config(), &["r1.example", "r2.example"]);
    let direct = only_transmit(&h.pdu(DEST, 1));
    let relays = transmits(&h.answer(direct.attempt, status(500)));
    h.answer(relays[0].attempt, limited(100_000));
    let outputs = h.answer(relays[1].attempt, status(503));
    assert_eq!(
        retry_at(&outputs).unwrap() - h.now,
        Duration::from_secs(100)
    );
}

#[test]
fn peer_alive_during_backoff_retries_now() {
    let mut h = Harness::new(offline_after(5));
    let first = only_transmit(&h.pdu(DEST, 1));
    let outputs = h.answer(first.attempt, status(500));
    assert!(retry_at(&outputs).is_some());
    let outputs = h.peer_alive(DEST);
    assert_eq!(kinds(&outputs), ["persist retry", "transmit direct"]);
    let again = only_transmit(&outputs);
    assert_eq!(again.request, first.request);
    // The old timer is gone: nothing more until this attempt ends.
    assert_eq!(h.out.poll_timeout(), None);
    assert!(h.advance(Duration::from_secs(3600)).is_empty());
    // Unknown destination: nothing.
    assert!(h.peer_alive("unknown.example").is_empty());
    assert_eq!(h.out.tracked_destinations(), 1);
}
