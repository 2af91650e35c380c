from training.sampler import GlobalBatchSampler


def test_ranks_together_see_the_single_process_batches():
    groups = [list(range(0, 11)), list(range(11, 20))]
    single = GlobalBatchSampler(groups, batch_size=4, seed=3)
    ranks = [GlobalBatchSampler(groups, batch_size=2, world_size=2, rank=r, seed=3) for r in range(2)]
    for epoch in (0, 1):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        one = list(single)
        two = [a + b for a, b in zip(*[list(r) for r in ranks], strict=True)]
        assert one == two and len(one) == len(single) == 2 + 2
        for batch in one:  # never mixes groups
            assert all(i < 11 for i in batch) or all(i >= 11 for i in batch)
    single.set_epoch(0)
    e0 = list(single)
    single.set_epoch(1)
    assert list(single) != e0
    single.set_epoch(0)
    assert list(single) == e0


def test_keep_last_partial_batch_single_process():
    s = GlobalBatchSampler([list(range(5))], batch_size=2, shuffle=False, drop_last=False)
    assert list(s) == [[0, 1], [2, 3], [4]] and len(s) == 3
