//! UDP Leasequery (RFC 5007; digest §8.2): one LEASEQUERY, retransmitted by the RFC 8415 §15
//! rules with IRT = LQ_TIMEOUT, MRT = LQ_MAX_RT and MRC = LQ_MAX_RC, answered by one
//! LEASEQUERY-REPLY.
//!
//! Each transaction has a fresh random xid that its retransmissions keep. A datagram is taken
//! as the reply only when it is a LEASEQUERY-REPLY with that xid, an OPTION_SERVERID, and our
//! DUID in OPTION_CLIENTID; anything else is dropped and the wait goes on. A reply holding
//! OPTION_LQ_CLIENT_LINK (the client is on several links) is followed by one new transaction
//! per listed link.

use std::io::ErrorKind;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::binding::ClientData;
use super::error::{Error, Result};
use super::query::Query;
use super::time::TimeBase;
use crate::codec::{
    BuildOptions, DhcpOption, MessageBuilder, MessageRepr, MessageType, Status, Xid,
};

/// The RFC 8415 §15 retransmission parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmission {
    /// IRT, the first timeout (LQ_TIMEOUT, 1 s).
    pub irt: Duration,
    /// MRT, the largest timeout (LQ_MAX_RT, 10 s).
    pub mrt: Duration,
    /// MRC, the most transmissions of one message, the first included (LQ_MAX_RC, 5); 0 for
    /// no limit.
    pub mrc: u32,
}

impl Default for Retransmission {
    fn default() -> Self {
        Self {
            irt: Duration::from_secs(1),
            mrt: Duration::from_secs(10),
            mrc: 5,
        }
    }
}

impl Retransmission {
    /// The timeout after a transmission (RFC 8415 §15): `IRT + RAND·IRT` after the first,
    /// `2·RTprev + RAND·RTprev` after the next ones, and `MRT + RAND·MRT` once that would
    /// exceed MRT. `rand` is RAND, drawn uniformly from [-0.1, 0.1] (clamped to it).
    #[must_use]
    pub fn timeout(&self, previous: Option<Duration>, rand: f64) -> Duration {
        let rand = rand.clamp(-0.1, 0.1);
        let rt = match previous {
            None => self.irt.mul_f64(1.0 + rand),
            Some(prev) => prev.mul_f64(2.0 + rand),
        };
        if !self.mrt.is_zero() && rt > self.mrt {
            self.mrt.mul_f64(1.0 + rand)
        } else {
            rt
        }
    }
}

/// A RAND for [`Retransmission::timeout`].
fn draw() -> f64 {
    rand::random::<f64>().mul_add(0.2, -0.1)
}

/// The answer to one UDP query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpAnswer {
    /// The client's data: none when the server has no binding, one per link otherwise.
    pub clients: Vec<ClientData>,
    /// The server's DUID (OPTION_SERVERID of the reply).
    pub server_id: Vec<u8>,
    /// The xid of each transaction: one, or one more per link of an OPTION_LQ_CLIENT_LINK.
    pub xids: Vec<Xid>,
    /// Datagrams sent in all, retransmissions included.
    pub transmissions: u32,
}

/// A UDP Leasequery requestor talking to one server by unicast.
#[derive(Debug)]
pub struct UdpRequestor {
    socket: UdpSocket,
    requestor: Vec<u8>,
    retransmission: Retransmission,
}

impl UdpRequestor {
    /// A requestor whose DUID is `requestor`, on an ephemeral port, asking `server`.
    pub fn new(server: SocketAddr, requestor: &[u8]) -> Result<Self> {
        Self::from_port(server, requestor, 0)
    }

    /// The same, sending from UDP port `port` (0: an ephemeral port). Some servers answer a
    /// direct query on the DHCPv6 client port 546 whatever port it came from.
    pub fn from_port(server: SocketAddr, requestor: &[u8], port: u16) -> Result<Self> {
        let local: SocketAddr = if server.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, port).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, port).into()
        };
        let socket = UdpSocket::bind(local).map_err(Error::io("bind"))?;
        // Connected: the kernel drops datagrams from anyone but the server.
        socket.connect(server).map_err(Error::io("connect"))?;
        Ok(Self {
            socket,
            requestor: requestor.to_vec(),
            retransmission: Retransmission::default(),
        })
    }

    /// Replaces the retransmission parameters.
    pub const fn set_retransmission(&mut self, r: Retransmission) {
        self.retransmission = r;
    }

    /// Asks `query`, following OPTION_LQ_CLIENT_LINK with one query per link.
    pub fn query(&mut self, query: &Query) -> Result<UdpAnswer> {
        let mut answer = UdpAnswer {
            clients: Vec::new(),
            server_id: Vec::new(),
            xids: Vec::new(),
            transmissions: 0,
        };
        let links = self.transaction(query, &mut answer)?;
        for link in links {
            // One level only: a per-link query that names links again is not followed.
            let _ = self.transaction(&query.on_link(link), &mut answer)?;
        }
        Ok(answer)
    }

    /// One transaction; its client data goes into `answer`. Returns the links of an
    /// OPTION_LQ_CLIENT_LINK.
    fn transaction(&self, query: &Query, answer: &mut UdpAnswer) -> Result<Vec<Ipv6Addr>> {
        let xid = loop {
            let x = Xid::new(rand::random::<u32>());
            if x.value() != 0 && !answer.xids.contains(&x) {
                break x;
            }
        };
        answer.xids.push(xid);
        let b = MessageBuilder::leasequery(xid.value()).client_id(&self.requestor);
        let request = query
            .add_to(b, false)
            .build()
            .map_err(|e| Error::Invalid(format!("cannot encode the query: {e}")))?;
        let mut rt = None;
        let mut sent = 0u32;
        loop {
            self.socket.send(&request).map_err(Error::io("send"))?;
            sent = sent.saturating_add(1);
            answer.transmissions = answer.transmissions.saturating_add(1);
            let timeout = self.retransmission.timeout(rt, draw());
            rt = Some(timeout);
            if let Some(links) = self.await_reply(xid, Instant::now() + timeout, answer)? {
                return Ok(links);
            }
            if self.retransmission.mrc != 0 && sent >= self.retransmission.mrc {
                return Err(Error::NoAnswer {
                    transmissions: sent,
                });
            }
        }
    }

    /// Waits until `deadline` for the reply to `xid`: `Some(links)` once it came.
    fn await_reply(
        &self,
        xid: Xid,
        deadline: Instant,
        answer: &mut UdpAnswer,
    ) -> Result<Option<Vec<Ipv6Addr>>> {
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(Error::io("receive"))?;
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(Error::Io {
                        what: "receive",
                        source: e,
                    });
                }
            };
            let Ok(msg) = MessageRepr::parse(buf.get(..n).unwrap_or_default()) else {
                continue;
            };
            let ours = msg.msg_type() == MessageType::LeasequeryReply
                && msg.xid() == Some(xid)
                && msg.options.client_id().map(|d| d.as_bytes()) == Some(&self.requestor[..]);
            let server_id = msg.options.iter().find_map(|o| match o {
                DhcpOption::ServerId(d) => Some(d.as_bytes().to_vec()),
                _ => None,
            });
            let (true, Some(server_id)) = (ours, server_id) else {
                continue;
            };
            if let Some(s) = msg.options.status() {
                if s.status != Status::Success {
                    return Err(Error::Refused {
                        status: s.status,
                        message: s.message_lossy().into_owned(),
                    });
                }
            }
            answer.server_id = server_id;
            let time = TimeBase::now(msg.options.base_time());
            answer.clients.extend(ClientData::all_in(&msg, time));
            let links = msg
                .options
                .iter()
                .filter_map(|o| match o {
                    DhcpOption::LqClientLink(l) => Some(l.iter().collect::<Vec<_>>()),
                    _ => None,
                })
                .flatten()
                .collect();
            return Ok(Some(links));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_8415_schedule_doubles_up_to_mrt() {
        let r = Retransmission::default();
        let mut rt = None;
        let mut got = Vec::new();
        for _ in 0..6 {
            let t = r.timeout(rt, 0.0);
            got.push(t.as_secs_f64());
            rt = Some(t);
        }
        assert_eq!(got, [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]);
        // RAND scales each step, and the cap is MRT ± 10 %.
        assert_eq!(r.timeout(None, 0.1), Duration::from_millis(1100));
        assert_eq!(r.timeout(None, -0.5), Duration::from_millis(900));
        assert_eq!(
            r.timeout(Some(Duration::from_secs(8)), 0.1),
            Duration::from_secs(11)
        );
        assert_eq!(
            r.timeout(Some(Duration::from_secs(8)), -0.1),
            Duration::from_secs(9)
        );
        for _ in 0..1000 {
            let d = draw();
            assert!((-0.1..=0.1).contains(&d));
        }
    }
}
