//! Idempotent producers: the sequence rules a partition's owner applies to each batch.
//!
//! A batch of an idempotent producer carries its producer id, epoch and the sequence
//! number of its first record (Kafka's RecordBatch fields, KIP-98). The owner keeps, per
//! partition and producer, the epoch and the last [`PRODUCER_BATCHES_KEPT`] batches
//! (sequences and the offsets they got) — in memory while it owns the partition, and in
//! the metastore, written by the flush commit that holds the batches, so that the next
//! owner reads it with the high watermark before it accepts a write.
//!
//! Invariants (Kafka's rules, as its broker applies them):
//! - a batch of an older epoch than the producer's is refused: the producer is fenced;
//! - a batch of a newer epoch starts at sequence 0;
//! - a batch of the current epoch equal (first and last sequence) to one of the last five
//!   is a retry: it is answered with the offsets it got, and nothing is written;
//! - otherwise its first sequence follows the producer's last (wrapping after
//!   `i32::MAX` to 0), or it is refused as out of order, and nothing is written;
//! - a producer the partition does not know (new, or its state expired) may start at any
//!   sequence.
//!
//! State of a producer that has not written to the partition for
//! `producer_id_expiration_ms` is dropped (and deleted from the metastore with the next
//! flush); a partition keeps at most `max_producers_per_partition` producers.

use strata_metastore::{PRODUCER_BATCHES_KEPT, ProducerBatch, ProducerState};
use strata_proto::sequence_after;
use strata_storage::ProducerFields;

use crate::{Error, Result};

/// What to do with a batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Append it.
    Append,
    /// It is a retry of this batch, already written: answer with its offsets.
    Duplicate(ProducerBatch),
}

/// Checks a batch's producer fields against the producer's state in the partition
/// (`None`: unknown there). `records` is the batch's record count (at least 1).
pub(crate) fn check_sequence(
    topic: &str,
    partition: u32,
    state: Option<&ProducerState>,
    fields: ProducerFields,
    records: i32,
) -> Result<SequenceCheck> {
    let ProducerFields {
        producer_id,
        producer_epoch: epoch,
        base_sequence,
    } = fields;
    let Some(state) = state else {
        return Ok(SequenceCheck::Append);
    };
    if epoch < state.epoch {
        return Err(Error::ProducerFenced {
            producer_id,
            epoch,
            current: state.epoch,
        });
    }
    let out_of_order = |expected: String| Error::OutOfOrderSequence {
        topic: topic.to_string(),
        partition,
        producer_id,
        sequence: base_sequence,
        expected,
    };
    if epoch > state.epoch {
        return if base_sequence == 0 {
            Ok(SequenceCheck::Append)
        } else {
            Err(out_of_order(format!(
                "0 (epoch {epoch} is new in this partition)"
            )))
        };
    }
    let last_sequence = sequence_after(base_sequence, records - 1);
    if let Some(batch) = state
        .batches
        .iter()
        .find(|b| b.first_sequence == base_sequence && b.last_sequence == last_sequence)
    {
        return Ok(SequenceCheck::Duplicate(*batch));
    }
    match state.last_sequence() {
        Some(last) if sequence_after(last, 1) != base_sequence => {
            Err(out_of_order(sequence_after(last, 1).to_string()))
        }
        _ => Ok(SequenceCheck::Append),
    }
}

/// The producer's state after its batch `fields` of `records` records was given offsets
/// from `base_offset`, at `now_ms`.
pub(crate) fn record_batch(
    state: Option<ProducerState>,
    fields: ProducerFields,
    records: i32,
    base_offset: i64,
    now_ms: i64,
) -> ProducerState {
    let mut state = match state {
        Some(state) if state.epoch == fields.producer_epoch => state,
        _ => ProducerState {
            epoch: fields.producer_epoch,
            ..ProducerState::default()
        },
    };
    state.batches.push(ProducerBatch {
        first_sequence: fields.base_sequence,
        last_sequence: sequence_after(fields.base_sequence, records - 1),
        base_offset,
        last_offset: base_offset + i64::from(records) - 1,
    });
    if state.batches.len() > PRODUCER_BATCHES_KEPT {
        state.batches.remove(0);
    }
    state.last_write_ms = state.last_write_ms.max(now_ms);
    state
}

/// Whether a producer's state expired at `now_ms`.
pub(crate) fn expired(state: &ProducerState, now_ms: i64, expiration_ms: u64) -> bool {
    now_ms.saturating_sub(state.last_write_ms) > i64::try_from(expiration_ms).unwrap_or(i64::MAX)
}

/// Checks a request's producer fields.
pub(crate) fn check_fields(fields: ProducerFields) -> Result<()> {
    if fields.producer_id < 0 || fields.producer_epoch < 0 || fields.base_sequence < 0 {
        return Err(Error::InvalidArgument(format!(
            "producer id {}, epoch {} and base sequence {} must not be negative: take a \
             producer id with InitProducerId and number batches from 0",
            fields.producer_id, fields.producer_epoch, fields.base_sequence
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 42;

    fn fields(epoch: i16, base_sequence: i32) -> ProducerFields {
        ProducerFields {
            producer_id: PID,
            producer_epoch: epoch,
            base_sequence,
        }
    }

    fn check(state: Option<&ProducerState>, epoch: i16, seq: i32, n: i32) -> Result<SequenceCheck> {
        check_sequence("t", 0, state, fields(epoch, seq), n)
    }

    /// Batches of 10 records at sequences 0, 10, ..., written from offset 100.
    fn written(batches: i32) -> ProducerState {
        let mut state = None;
        for i in 0..batches {
            state = Some(record_batch(
                state,
                fields(3, i * 10),
                10,
                100 + i64::from(i) * 10,
                1_000,
            ));
        }
        state.expect("at least one batch")
    }

    #[test]
    fn next_sequence_is_accepted_and_a_gap_is_not() {
        let state = written(2);
        assert_eq!(
            check(Some(&state), 3, 20, 5).unwrap(),
            SequenceCheck::Append
        );
        let gap = check(Some(&state), 3, 21, 5).unwrap_err();
        assert!(
            matches!(gap, Error::OutOfOrderSequence { sequence: 21, ref expected, .. } if expected == "20"),
            "{gap}"
        );
        // Overlapping a written batch without being it is out of order too.
        assert!(check(Some(&state), 3, 5, 10).is_err());
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_gets_its_offsets() {
        let state = written(7);
        assert_eq!(state.batches.len(), PRODUCER_BATCHES_KEPT);
        for i in 2..7 {
            let SequenceCheck::Duplicate(batch) = check(Some(&state), 3, i * 10, 10).unwrap()
            else {
                panic!("batch {i} is a duplicate");
            };
            assert_eq!(batch.base_offset, 100 + i64::from(i) * 10);
            assert_eq!(batch.last_offset, batch.base_offset + 9);
        }
        // Older than the last five: out of order (Kafka's answer too).
        assert!(matches!(
            check(Some(&state), 3, 10, 10),
            Err(Error::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let state = written(2);
        assert!(matches!(
            check(Some(&state), 2, 20, 1),
            Err(Error::ProducerFenced {
                epoch: 2,
                current: 3,
                ..
            })
        ));
        assert_eq!(check(Some(&state), 4, 0, 1).unwrap(), SequenceCheck::Append);
        assert!(matches!(
            check(Some(&state), 4, 20, 1),
            Err(Error::OutOfOrderSequence { .. })
        ));
        let bumped = record_batch(Some(state), fields(4, 0), 1, 120, 2_000);
        assert_eq!(bumped.epoch, 4);
        assert_eq!(bumped.batches.len(), 1, "a new epoch starts a new history");
        assert_eq!(bumped.last_write_ms, 2_000);
    }

    #[test]
    fn unknown_producers_start_anywhere_and_sequences_wrap() {
        assert_eq!(check(None, 0, 12_345, 3).unwrap(), SequenceCheck::Append);
        let near_end = i32::MAX - 1;
        let state = record_batch(None, fields(0, near_end), 5, 0, 0);
        assert_eq!(state.batches[0].last_sequence, 2);
        assert_eq!(check(Some(&state), 0, 3, 1).unwrap(), SequenceCheck::Append);
        assert_eq!(sequence_after(i32::MAX, 1), 0);
    }

    #[test]
    fn states_expire_after_the_expiration() {
        let state = written(1);
        assert!(!expired(&state, 1_000 + 86_400_000, 86_400_000));
        assert!(expired(&state, 1_001 + 86_400_000, 86_400_000));
        assert!(check_fields(fields(-1, 0)).is_err());
        assert!(check_fields(fields(0, -5)).is_err());
        assert!(check_fields(fields(0, 0)).is_ok());
    }
}
