"""The words that name the classes of the real text tasks (SST-2, TREC), shared by prompts and instruction data.

A label as the data file writes it (SST-2's "0"/"1", TREC's coarse key "DESC" of "DESC:manner") maps to the one word a
model reads and writes for it.
"""

SENTIMENT_WORDS = {"0": "negative", "1": "positive", "negative": "negative", "positive": "positive"}

# TREC's six coarse classes (Li & Roth 2002); a fine label such as "DESC:manner" is named by its part before ":"
QUESTION_TYPE_WORDS = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "person",
    "LOC": "location",
    "NUM": "number",
}
