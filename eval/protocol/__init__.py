"""The 4D LangSplat evaluation protocol: field sources (our fields, published renders, targets, ground truth),
metrics (mIoU, mAcc, Acc, vIoU), the report, and the runner (``python -m eval.evaluate``). It scores with the
query package's relevancy and masks; the annotation readers are :mod:`preprocess.annotations`."""
