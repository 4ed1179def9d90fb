//! Chunk decoding on arbitrary bytes, and the XOR codec's round trip.
//!
//! 1. The input as a chunk (raw, and with its first byte as the encoding byte) must decode
//!    without panicking, yield at most its header's sample count, stop after an error, and
//!    agree with `decode_all`.
//! 2. The input as `(i64 timestamp, u64 value bits)` pairs, little-endian, 16 bytes each,
//!    must encode and decode back bit-exactly, both as given and with the timestamps
//!    turned into a running sum of small steps (to reach the narrow delta-of-delta buckets).
//!    The open chunk must also decode to the prefix appended so far, midway through.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tsdb::chunkenc::{
    Encoding, MAX_SAMPLES_PER_CHUNK, SampleIter, XorAppender, XorIter, decode_all,
};

fuzz_target!(|data: &[u8]| {
    if let Some((&enc, chunk)) = data.split_first() {
        if let Ok(enc) = Encoding::try_from(enc) {
            check_decode(enc, chunk);
        }
    }
    check_decode(Encoding::Xor, data);

    let pairs = pairs(data);
    round_trip(&pairs);
    let mut t = 0i64;
    let stepped: Vec<(i64, u64)> = pairs
        .iter()
        .map(|&(raw, v)| {
            // Steps of up to about ±2^23 ms, often repeated by the fuzzer's mutations.
            t = t.wrapping_add(raw >> 40);
            (t, v)
        })
        .collect();
    round_trip(&stepped);
});

fn check_decode(enc: Encoding, chunk: &[u8]) {
    let Ok(it) = SampleIter::new(enc, chunk) else {
        assert!(decode_all(enc, chunk).is_err());
        return;
    };
    let total = it.num_samples();
    let mut n = 0;
    let mut failed = false;
    for s in it {
        assert!(!failed, "an item after an error");
        failed = s.is_err();
        n += 1;
    }
    assert!(n <= total);
    match decode_all(enc, chunk) {
        Ok(all) => {
            assert!(!failed);
            assert_eq!(all.len(), total);
            assert_eq!(n, total);
        }
        Err(_) => assert!(failed),
    }
}

fn pairs(data: &[u8]) -> Vec<(i64, u64)> {
    data.chunks_exact(16)
        .take(MAX_SAMPLES_PER_CHUNK)
        .filter_map(|c| {
            let (t, v) = c.split_first_chunk::<8>()?;
            let v = v.first_chunk::<8>()?;
            Some((i64::from_le_bytes(*t), u64::from_le_bytes(*v)))
        })
        .collect()
}

fn decode(bytes: &[u8]) -> Vec<(i64, u64)> {
    let it = XorIter::new(bytes).expect("an appender's chunk has a header");
    it.map(|s| {
        let s = s.expect("an appender's chunk decodes");
        (s.t, s.v.to_bits())
    })
    .collect()
}

fn round_trip(samples: &[(i64, u64)]) {
    let mut a = XorAppender::new();
    let mid = samples.len() / 2;
    for (i, &(t, v)) in samples.iter().enumerate() {
        a.append(t, f64::from_bits(v));
        if i == mid {
            assert_eq!(decode(a.bytes()), &samples[..=i], "open chunk prefix");
        }
    }
    assert_eq!(a.num_samples(), samples.len());
    assert_eq!(decode(a.bytes()), samples);
    assert_eq!(decode(&a.into_bytes()), samples);
}
