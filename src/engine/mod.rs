//! The protocol engine, sans-IO: everything lqd decides, with time passed in and no sockets.
//!
//! Built so far: [`query`], which reads a LEASEQUERY into a [`query::Query`] or the error
//! reply it deserves; [`reply`], which turns a binding into OPTION_CLIENT_DATA; [`udp`], which
//! answers a UDP Leasequery datagram; [`bulk`], which streams a Bulk Leasequery's answer;
//! [`session`], one TCP connection's state.

pub mod active;
pub mod bulk;
pub mod query;
pub mod reply;
pub mod session;
pub mod tally;
pub mod udp;
