//! The live vPDQ window's percentages equal a from-scratch vPDQ comparison of the
//! window's frames after every frame, and its events follow the enter/exit levels.

use firebreak_hashing::vpdq::{self, VpdqFeature};
use firebreak_hashing::{Hash256, PdqHash};
use firebreak_matching::window::{VpdqWindow, WindowConfig, WindowEvent};
use proptest::prelude::*;

mod common;
use common::Rng;

/// Quality as a function of the hash, so identical hashes have identical quality.
fn quality(h: &Hash256) -> u8 {
    if h.limbs()[0].is_multiple_of(5) {
        30
    } else {
        90
    }
}

fn feature(h: Hash256, t: f64) -> VpdqFeature {
    VpdqFeature {
        pdq: PdqHash {
            hash: h,
            quality: quality(&h),
        },
        frame_number: 0,
        timestamp: t,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, rng_seed: proptest::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]

    #[test]
    fn window_equals_recomputation(seed in any::<u64>(), steps in 1usize..200, window in 2.0f64..20.0) {
        let mut rng = Rng(seed);
        let videos: Vec<Vec<VpdqFeature>> = (0..3)
            .map(|_| (0..8).map(|_| { let h = rng.hash(); feature(h, 0.0) }).collect())
            .collect();
        let config = WindowConfig { window_secs: window, ..WindowConfig::default() };
        let mut w = VpdqWindow::new(config);
        let mut history: Vec<VpdqFeature> = Vec::new();
        let mut t = 0.0;
        let mut entered = [false; 3];
        for _ in 0..steps {
            t += (1 + rng.next() % 10) as f64 / 10.0;
            let h = match rng.next() % 4 {
                0 => rng.hash(),
                1 if !history.is_empty() => history[(rng.next() % history.len() as u64) as usize].pdq.hash,
                _ => {
                    let v = &videos[(rng.next() % 3) as usize];
                    let f = v[(rng.next() % v.len() as u64) as usize].pdq.hash;
                    let flips = rng.below(45) as u32;
                    rng.near(&f, flips)
                }
            };
            history.push(feature(h, t));
            let events = w.push(t, h, quality(&h), |q| {
                (0..3u32).filter(|&v| vpdq::prepare(&videos[v as usize], 50).iter().any(|f| f.distance(q) <= 31)).collect()
            });
            let in_window: Vec<VpdqFeature> =
                history.iter().filter(|f| f.timestamp > t - window).cloned().collect();
            let unique = vpdq::prepare(&in_window, 50).len();
            prop_assert_eq!(w.unique_frames(), unique);
            for (v, video) in videos.iter().enumerate() {
                let want = vpdq::compare(&in_window, video, 50, 31).map_or(0.0, |m| m.query_match_percent);
                prop_assert_eq!(w.percent(v as u32), want);
            }
            for e in events {
                match e {
                    WindowEvent::Entered { video, percent, at } => {
                        prop_assert!(!entered[video as usize]);
                        prop_assert!(percent >= config.enter_percent && unique >= config.min_frames);
                        prop_assert_eq!(at, t);
                        entered[video as usize] = true;
                    }
                    WindowEvent::Left { video, percent, .. } => {
                        prop_assert!(entered[video as usize]);
                        prop_assert!(percent < config.exit_percent);
                        entered[video as usize] = false;
                    }
                }
            }
            for v in 0..3u32 {
                let p = w.percent(v);
                if entered[v as usize] {
                    prop_assert!(p >= config.exit_percent);
                } else {
                    prop_assert!(!(p >= config.enter_percent && unique >= config.min_frames));
                }
                prop_assert_eq!(w.entered().contains(&v), entered[v as usize]);
            }
        }
    }
}

#[test]
fn stalled_stream_ages_out() {
    let h = Hash256::from_limbs([3, 5, 7, 11]);
    let mut w = VpdqWindow::new(WindowConfig {
        min_frames: 1,
        ..WindowConfig::default()
    });
    let events = w.push(0.0, h, 100, |_| vec![7]);
    assert_eq!(
        events,
        vec![WindowEvent::Entered {
            video: 7,
            percent: 100.0,
            at: 0.0
        }]
    );
    assert!(w.advance(5.0).is_empty());
    let events = w.advance(10.0);
    assert_eq!(
        events,
        vec![WindowEvent::Left {
            video: 7,
            percent: 0.0,
            at: 10.0
        }]
    );
    assert_eq!(w.unique_frames(), 0);
}
