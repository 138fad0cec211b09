//! Semi-supervised SupCon: samples without a label.
//!
//! A label is a class id ≥ 0; a negative label ([`UNLABELED`]) marks a sample without one.
//! An unlabeled sample is a class of its own: its positives are only its own other views
//! (SimCLR's), and it is a negative for every other anchor, labeled or not. A labeled anchor's
//! positives are the other views of its class, as in SupCon. An unlabeled queue key is a
//! negative for every anchor (MoCo's).
//!
//! Every backend gets this from one rule, applied before it builds its classes:
//! [`own_labels`] gives each unlabeled batch sample `b` the label `i64::MIN + b` and each
//! unlabeled queue key `k` the label `i64::MIN + B + k` — distinct from each other and from
//! every class id ≥ 0, and increasing in `b`, so that the dense class ids of a batch with no
//! label at all are the sample indices, exactly SimCLR's (the two ends, no unlabeled sample and
//! no labeled one, are SupCon and SimCLR bit for bit; `tests/semi_supervised.rs`).

use std::borrow::Cow;

/// The label of a sample without one (any negative label means the same).
pub const UNLABELED: i64 = -1;

/// Whether `label` marks a sample without a label.
pub fn is_unlabeled(label: i64) -> bool {
    label < 0
}

/// `labels` (`[B]`) and `queue_labels` (`[K]`) with every unlabeled entry replaced by a label
/// of its own (see the module docs); borrowed unchanged when every entry has a label.
pub fn own_labels<'a>(
    labels: &'a [i64],
    queue_labels: &'a [i64],
) -> (Cow<'a, [i64]>, Cow<'a, [i64]>) {
    let batch = labels.len();
    (
        own_labels_from(labels, 0),
        own_labels_from(queue_labels, batch),
    )
}

/// `labels` with unlabeled entry `i` replaced by `i64::MIN + offset + i`.
fn own_labels_from(labels: &[i64], offset: usize) -> Cow<'_, [i64]> {
    if !labels.iter().any(|&l| is_unlabeled(l)) {
        return Cow::Borrowed(labels);
    }
    Cow::Owned(
        labels
            .iter()
            .enumerate()
            .map(|(i, &label)| {
                if is_unlabeled(label) {
                    own_label(offset + i)
                } else {
                    label
                }
            })
            .collect(),
    )
}

/// The label of the unlabeled row at `position` (batch samples first, then queue keys).
pub(crate) fn own_label(position: usize) -> i64 {
    i64::MIN + position as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_entries_are_borrowed_unchanged() {
        let (batch, queue) = own_labels(&[0, 3, 3], &[1, 0]);
        assert!(matches!(batch, Cow::Borrowed(_)));
        assert!(matches!(queue, Cow::Borrowed(_)));
    }

    #[test]
    fn every_unlabeled_entry_gets_a_label_no_other_row_has() {
        let (batch, queue) = own_labels(&[UNLABELED, 2, -7, UNLABELED], &[UNLABELED, 2]);
        assert_eq!(
            &*batch,
            &[own_label(0), 2, own_label(2), own_label(3)],
            "unlabeled samples get increasing labels of their own, class ids stay"
        );
        assert_eq!(&*queue, &[own_label(4), 2]);
        let mut all: Vec<i64> = batch.iter().chain(queue.iter()).copied().collect();
        all.retain(|&l| l != 2);
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "no two unlabeled rows share a label");
        assert!(all.iter().all(|&l| l < 0));
    }
}
