//! Chunk decoding on arbitrary bytes, and the round trip of both chunk codecs.
//!
//! 1. The input as a chunk (raw as XOR and as DoD, and with its first byte as the
//!    encoding byte) must decode without panicking, yield at most its header's sample
//!    count, stop after an error, and agree with `decode_all`; the bulk decoder
//!    (`SampleIter::decode_range`) must agree with both.
//! 2. The input as `(i64 timestamp, u64 value bits)` pairs, little-endian, 16 bytes each,
//!    must encode and decode back bit-exactly, both as given and with the timestamps
//!    turned into a running sum of small steps (to reach the narrow delta-of-delta
//!    buckets and the DoD grid), through the XOR appender (whose open chunk must also
//!    decode to the prefix appended so far, midway through) and through `encode_best`
//!    and `encode_dod`. A third variant turns the values into decimals (to reach the DoD
//!    chunk's integer path) and keeps a few raw ones (its exceptions). `encode_best` must
//!    return the smaller of the two encodings; every strict prefix of a DoD chunk must
//!    fail to decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tsdb::Sample;
use tsdb::chunkenc::{
    DodIter, Encoding, MAX_SAMPLES_PER_CHUNK, SampleIter, XorAppender, XorIter, decode_all,
    encode_best, encode_dod,
};

fuzz_target!(|data: &[u8]| {
    if let Some((&enc, chunk)) = data.split_first()
        && let Ok(enc) = Encoding::try_from(enc)
    {
        check_decode(enc, chunk);
    }
    check_decode(Encoding::Xor, data);
    check_decode(Encoding::Dod, data);

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
    let decimal: Vec<(i64, u64)> = stepped
        .iter()
        .map(|&(t, v)| {
            // Mostly integers of up to 20 bits over 10^0..10^7; one value in 64 raw.
            if v % 64 == 0 {
                return (t, v);
            }
            let m = ((v >> 8) & 0xf_ffff) as i64 - 0x8_0000;
            let e = ((v >> 3) % 8) as i32;
            (t, (m as f64 / 10f64.powi(e)).to_bits())
        })
        .collect();
    round_trip(&decimal);
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
    let mut bulk = Vec::new();
    let bulk_ok = SampleIter::new(enc, chunk)
        .and_then(|mut it| it.decode_range(i64::MIN, i64::MAX, &mut bulk))
        .is_ok();
    match decode_all(enc, chunk) {
        Ok(all) => {
            assert!(!failed);
            assert_eq!(all.len(), total);
            assert_eq!(n, total);
            // The bulk decoder agrees with the iterator, bit for bit.
            assert!(bulk_ok);
            let bits = |v: &[Sample]| v.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
            assert_eq!(bits(&bulk), bits(&all));
        }
        Err(_) => assert!(failed && !bulk_ok),
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

fn decode_xor(bytes: &[u8]) -> Vec<(i64, u64)> {
    let it = XorIter::new(bytes).expect("an appender's chunk has a header");
    it.map(|s| {
        let s = s.expect("an appender's chunk decodes");
        (s.t, s.v.to_bits())
    })
    .collect()
}

fn decode(enc: Encoding, bytes: &[u8]) -> Vec<(i64, u64)> {
    decode_all(enc, bytes)
        .expect("an encoder's chunk decodes")
        .iter()
        .map(|s| (s.t, s.v.to_bits()))
        .collect()
}

fn round_trip(samples: &[(i64, u64)]) {
    let mut a = XorAppender::new();
    let mid = samples.len() / 2;
    for (i, &(t, v)) in samples.iter().enumerate() {
        a.append(t, f64::from_bits(v));
        if i == mid {
            assert_eq!(decode_xor(a.bytes()), &samples[..=i], "open chunk prefix");
        }
    }
    assert_eq!(a.num_samples(), samples.len());
    assert_eq!(decode_xor(a.bytes()), samples);
    let xor = a.into_bytes();
    assert_eq!(decode_xor(&xor), samples);

    let s: Vec<Sample> = samples
        .iter()
        .map(|&(t, v)| Sample {
            t,
            v: f64::from_bits(v),
        })
        .collect();
    let dod = encode_dod(&s);
    assert_eq!(decode(Encoding::Dod, &dod), samples);
    let (enc, best) = encode_best(&s);
    assert_eq!(decode(enc, &best), samples);
    assert_eq!(
        best.len(),
        dod.len().min(xor.len()),
        "encode_best is the smaller"
    );
    if samples.len() <= 64 {
        for len in 0..dod.len() {
            let cut = DodIter::new(&dod[..len]).and_then(|it| it.collect::<Result<Vec<_>, _>>());
            assert!(cut.is_err(), "a prefix of {len} bytes decodes");
        }
    }
}
