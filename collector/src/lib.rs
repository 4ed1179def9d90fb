//! Ingest: decoding and validating what senders push into Minos.
