//! The `runner` crate will hold `runmany`, which launches many instances of an executable in
//! parallel, measures them and compares process mode with serve mode.
//!
//! It is a skeleton until its issue lands: there is no binary yet, so nothing here can be
//! mistaken for a working runner.
