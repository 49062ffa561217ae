"""Span-level precision, recall and F1 of BIO (or IOB2) tag sequences, as seqeval's default
(conlleval) mode counts them: a span is right only if its type, start and end all are."""


def spans(tags):
    """{(type, start, end)} of one sentence's tags; an I- without a B- starts a span."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if start is not None and (prefix != "I" or label != kind):
            found.add((kind, start, i))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, label
    return found


def span_f1(true_sentences, predicted_sentences):
    """{"precision", "recall", "f1"} over all spans of all sentences."""
    true_count = predicted_count = correct = 0
    for truth, predicted in zip(true_sentences, predicted_sentences):
        t, p = spans(truth), spans(predicted)
        true_count, predicted_count, correct = (true_count + len(t), predicted_count + len(p),
                                                correct + len(t & p))
    precision = correct / predicted_count if predicted_count else 0.0
    recall = correct / true_count if true_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
