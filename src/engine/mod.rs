//! The protocol engine, sans-IO: everything lqd decides, with time passed in and no sockets.
//!
//! Built so far: [`query`], which reads a LEASEQUERY into a [`query::Query`] or the error
//! reply it deserves.

pub mod query;
