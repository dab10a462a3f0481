//! Replies as they arrive: each matched to its caller in order and handed over, with what
//! some replies ask of the client first (a NOSCRIPT retry as EVAL, a cluster's redirection, a
//! failover's `-READONLY`, the answers to the connection's own setup).

use super::{now, Client, Resend, Waiter};
use crate::glue::redis::RedisError;
use crate::redis::pipeline::{Entry, Kind};
use crate::redis::resp::Reply;
use crate::redis::sentinel;

impl Client {
    /// Hands every complete reply to its caller; false if the connection was failed.
    pub(super) fn dispatch(&mut self) -> bool {
        let mut consumed = 0;
        while consumed < self.input.len() {
            let Some(bound) = self.pending.next_bound() else {
                self.fail(RedisError::Protocol("a reply nothing asked for"), "protocol error");
                return false;
            };
            let reply = match self.decoder.decode(&self.input[consumed..], bound) {
                Ok((used, reply)) => {
                    consumed += used;
                    reply
                }
                Err(e) => {
                    self.fail(RedisError::Protocol(e.0), "protocol error");
                    return false;
                }
            };
            let Some(reply) = reply else { break };
            let p = self.pending.pop().expect("a reply's pending");
            if !self.reply(p, reply) {
                return false;
            }
        }
        self.input.drain(..consumed);
        true
    }

    /// Handles one reply; false if the connection was failed.
    fn reply(&mut self, mut p: Entry<Waiter>, reply: Reply) -> bool {
        if let Reply::Error(e) = &reply {
            if let Some(report) = &self.on_error {
                report(&RedisError::Server(e.clone()));
            }
        }
        if let Reply::Error(e) = &reply {
            if p.kind == Kind::Command && sentinel::is_not_primary(e) {
                // A failover made this server a replica: never write there; find the primary.
                if let Some(waiter) = p.waiter.take() {
                    (waiter.callback)(Err(RedisError::Server(e.clone())));
                }
                self.fail(RedisError::Server(e.clone()), "the server is no longer the primary");
                return false;
            }
        }
        match (p.kind, reply) {
            (Kind::Discover, reply) => {
                self.on_discovered(&reply);
                false
            }
            (Kind::Setup | Kind::Probe, Reply::Error(e)) => {
                self.fail(RedisError::Server(e), "setup refused");
                false
            }
            (Kind::Setup, _) => true,
            (Kind::Probe, _) => {
                self.recovered();
                true
            }
            (Kind::Command, reply) => {
                let Some(mut waiter) = p.waiter.take() else { return true }; // timed out already
                if let (Reply::Error(e), Some(hook)) = (&reply, &self.on_redirect) {
                    if let Some(redirect) = crate::redis::cluster::redirect(e) {
                        if let Some(command) = waiter.command.take() {
                            hook(Resend {
                                redirect,
                                error: e.clone(),
                                command,
                                bound: p.bound,
                                script: waiter.script,
                                callback: waiter.callback,
                                queued_at: p.queued_at,
                                hops: waiter.hops,
                                slot: waiter.slot,
                            });
                            return true;
                        }
                    }
                }
                let noscript = matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT"));
                let retry = match (waiter.script.filter(|_| noscript), &waiter.command) {
                    (Some(s), Some(cmd)) => s.eval_for(cmd),
                    _ => None,
                };
                if let Some(retry) = retry {
                    // Same caller, same deadline: only the command changes (and is kept, should
                    // a cluster redirect the EVAL).
                    waiter.script = None;
                    self.out.extend_from_slice(&retry);
                    waiter.command = Some(retry);
                    p.waiter = Some(waiter);
                    self.pending.requeue(p);
                    self.schedule_flush();
                    return true;
                }
                // What the caller waited, NOSCRIPT retry included.
                if let Some(observe) = &self.on_latency {
                    observe(now().saturating_sub(p.queued_at));
                }
                (waiter.callback)(match reply {
                    Reply::Error(e) => Err(RedisError::Server(e)),
                    other => Ok(other),
                });
                true
            }
        }
    }
}
