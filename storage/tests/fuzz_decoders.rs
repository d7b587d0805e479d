//! Fuzzing of the decoders that read stored bytes: the RecordBatch decoder (every block a
//! reader or compactor reads) and the segment footer/trailer decoder. Property tests
//! (proptest): random bytes, and valid encodings with bytes flipped, cut or inserted,
//! must decode to an error or to records that honour the expected offsets, never panic
//! and never allocate without a bound. Any record list must round-trip exactly.
//!
//! CI runs `PROPTEST_CASES` cases per property (default below, a few seconds); set it
//! higher to fuzz longer: `PROPTEST_CASES=200000 cargo test -p strata-storage --test
//! fuzz_decoders --release`.

use bytes::Bytes;
use proptest::prelude::*;
use strata_storage::record::{Compression, Record, decode_block, encode_batch};
use strata_storage::segment::{SegmentBuilder, read_footer};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        Just(Compression::Zstd)
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Records at increasing offsets from 1000 (gaps allowed), with repeated header keys.
fn records() -> impl Strategy<Value = Vec<Record>> {
    let record = (
        0i64..5,
        any::<i64>(),
        proptest::option::of(bytes(40)),
        proptest::option::of(bytes(200)),
        proptest::collection::vec(("[a-c]{0,3}", bytes(10)), 0..6),
    );
    proptest::collection::vec(record, 1..40).prop_map(|fields| {
        let mut offset = 999;
        fields
            .into_iter()
            .map(|(gap, timestamp_ms, key, value, headers)| {
                offset += 1 + gap;
                Record {
                    offset,
                    timestamp_ms,
                    key,
                    value,
                    headers,
                }
            })
            .collect()
    })
}

/// A change to stored bytes: flip a byte, cut the tail, or insert bytes.
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, x)| Damage::Flip(at, x)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Damage::Insert(at, b)),
    ]
}

fn apply(bytes: &[u8], damage: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    match damage {
        Damage::Flip(at, x) => {
            let at = at % out.len();
            out[at] ^= x;
        }
        Damage::Cut(at) => out.truncate(at % out.len()),
        Damage::Insert(at, extra) => {
            let at = at % out.len();
            out.splice(at..at, extra.iter().copied());
        }
    }
    out
}

/// Decoded records, if any, lie within the expected offsets and increase.
fn check_decoded<E>(result: Result<Vec<Record>, E>, first: i64, last: i64) {
    if let Ok(records) = result {
        for pair in records.windows(2) {
            assert!(pair[0].offset < pair[1].offset);
        }
        for r in &records {
            assert!((first..=last).contains(&r.offset));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn batches_round_trip(records in records(), compression in compression()) {
        let block = encode_batch(&records, compression).unwrap();
        let last = records.last().unwrap().offset;
        prop_assert_eq!(decode_block(block, "o", 0, 1000..=last).unwrap(), records);
    }

    #[test]
    fn random_bytes_never_decode_to_a_panic(block in bytes(600)) {
        check_decoded(decode_block(block, "o", 0, 0..=i64::MAX), 0, i64::MAX);
    }

    #[test]
    fn damaged_batches_are_errors_or_in_range(
        records in records(),
        compression in compression(),
        damage in damage(),
    ) {
        let block = encode_batch(&records, compression).unwrap();
        let last = records.last().unwrap().offset;
        let damaged = Bytes::from(apply(&block, &damage));
        check_decoded(decode_block(damaged, "o", 0, 1000..=last), 1000, last);
    }

    #[test]
    fn random_bytes_are_no_footer(object in bytes(400)) {
        let _ = read_footer("o", &object);
    }

    #[test]
    fn damaged_segments_keep_their_footer_or_are_corrupt(
        records in records(),
        damage in damage(),
    ) {
        let mut builder = SegmentBuilder::new();
        builder.add_block("t", "", 3, &records, Compression::None).unwrap();
        let object = builder.finish();
        let footer = read_footer("o", &object).unwrap();
        let damaged = apply(&object, &damage);
        if let Ok(read) = read_footer("o", &damaged) {
            // Only damage outside the footer and trailer leaves one that reads.
            prop_assert_eq!(read, footer);
        }
    }
}
