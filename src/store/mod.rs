//! The experiment store (SQLite): the only module that writes SQL.
pub mod filter;
