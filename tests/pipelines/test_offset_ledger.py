"""The committed offset advances only over contiguous settled ranges."""

from pipelines.offsets import _OffsetLedger


def test_out_of_order_acks_advance_only_when_contiguous():
    ledger = _OffsetLedger(0)
    assert not ledger.settle(2, 3)
    assert not ledger.settle(3, 5)
    assert ledger.settle(0, 2)
    assert ledger.next == 5


def test_duplicate_acks_below_the_committed_offset_change_nothing():
    ledger = _OffsetLedger(0)
    ledger.settle(0, 4)
    assert not ledger.settle(1, 3)
    assert ledger.next == 4 and ledger.ranges == []


def test_overlapping_ranges_from_a_re_read_are_absorbed():
    ledger = _OffsetLedger(10)
    assert not ledger.settle(14, 16)
    assert ledger.settle(8, 14)  # a re-read that started before the resume position
    assert ledger.next == 16


def test_gaps_from_compaction_are_covered_by_the_claimed_range():
    ledger = _OffsetLedger(0)
    assert ledger.settle(0, 7)  # the reader claimed 0..6 for the record at offset 6
    assert ledger.next == 7
