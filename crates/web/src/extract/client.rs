//! `ClientAddr`: the address of the client a request came from, for the
//! sign-in limit per address.
//!
//! Without proxies in front (`ProxyHops(0)`, the default) it is the TCP
//! peer. Behind `n` trusted proxies that each append to `X-Forwarded-For`
//! (a load balancer is one), it is the `n`-th entry from the right: entries
//! further left were written by the client itself and cannot be trusted.
//! A header with fewer entries than that, or an entry that is not an IP
//! address, falls back to the leftmost trusted entry, then to the peer.

use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};

use actix_web::dev::Payload;
use actix_web::http::header::HeaderName;
use actix_web::{FromRequest, HttpRequest};

use crate::problem::ApiError;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How many trusted proxies stand in front of the service; app data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyHops(pub usize);

/// The client's address, when it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequest for ClientAddr {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let hops = req.app_data::<ProxyHops>().copied().unwrap_or_default().0;
        let forwarded: Vec<&str> = req
            .headers()
            .get_all(X_FORWARDED_FOR)
            .filter_map(|v| v.to_str().ok())
            .collect();
        ready(Ok(Self(client_addr(req.peer_addr(), &forwarded, hops))))
    }
}

/// The rule above, on the peer and the `X-Forwarded-For` header lines.
fn client_addr(peer: Option<SocketAddr>, forwarded: &[&str], hops: usize) -> Option<IpAddr> {
    let peer = peer.map(|p| p.ip());
    if hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = forwarded
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    // The last `hops` entries were appended by our proxies; the client's is
    // the one the outermost proxy appended.
    let trusted = &entries[entries.len().saturating_sub(hops)..];
    trusted.iter().find_map(|e| parse_ip(e)).or(peer)
}

/// An address as proxies write it: `203.0.113.9`, `2001:db8::1`, or with a
/// port (`203.0.113.9:4711`, `[2001:db8::1]:4711`).
fn parse_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Option<SocketAddr> {
        Some("10.0.0.5:50000".parse().expect("addr"))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn without_proxies_the_peer_is_the_client_whatever_the_header_says() {
        assert_eq!(client_addr(peer(), &["203.0.113.9"], 0), ip("10.0.0.5"));
    }

    #[test]
    fn behind_proxies_the_entry_the_outermost_one_wrote_is_the_client() {
        // The client forged "1.2.3.4"; the load balancer appended the real one.
        assert_eq!(
            client_addr(peer(), &["1.2.3.4, 203.0.113.9"], 1),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(peer(), &["1.2.3.4, 203.0.113.9", "172.16.0.2"], 2),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(peer(), &["[2001:db8::7]:4711"], 1),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn a_missing_or_short_or_garbled_header_falls_back_to_what_can_be_trusted() {
        assert_eq!(client_addr(peer(), &[], 1), ip("10.0.0.5"));
        assert_eq!(client_addr(peer(), &["203.0.113.9"], 2), ip("203.0.113.9"));
        assert_eq!(
            client_addr(peer(), &["203.0.113.9, unknown"], 2),
            ip("203.0.113.9")
        );
        assert_eq!(client_addr(peer(), &["not an address"], 1), ip("10.0.0.5"));
        assert_eq!(client_addr(None, &[], 1), None);
    }
}
