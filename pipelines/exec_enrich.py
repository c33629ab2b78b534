"""An `exec` stage for pipelines/exec.yaml: scores the mood of a review.

flow writes one JSON item per line to stdin; this script answers each with
one JSON line on stdout: the review with its word count, a score (positive
words minus negative ones) and a mood. A blank review is answered with
`null`, which filters it out. Logs go to stderr, which flow logs.
"""

import json
import re
import sys

POSITIVE = {"good", "great", "love", "lovely", "excellent", "fast", "friendly", "perfect"}
NEGATIVE = {"bad", "awful", "slow", "broken", "rude", "terrible", "never", "cold"}


def enrich(review):
    words = re.findall(r"[a-z']+", review["text"].lower())
    if not words:
        print(f"review {review['id']} is blank: skipped", file=sys.stderr, flush=True)
        return None
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    mood = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    return {**review, "words": len(words), "score": score, "mood": mood}


for line in sys.stdin:
    print(json.dumps(enrich(json.loads(line))), flush=True)
