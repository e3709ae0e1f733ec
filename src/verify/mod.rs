//! Face verification: embeddings, open-set matching, metrics, submissions.
