//! IP allow/deny lists with CIDR prefixes, IPv4 and IPv6.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: u128,
    prefix: u8,
    v4: bool,
}

impl Cidr {
    /// `10.0.0.0/8`, `192.168.1.7`, `2001:db8::/32`, `::1`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let invalid = || format!("invalid address \"{s}\"");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().map_err(|_| invalid())?)),
            None => (s, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
        let (addr, v4, max) = bits(ip);
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(invalid());
        }
        Ok(Cidr { addr: addr & mask(prefix, max), prefix, v4 })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let (addr, v4, max) = bits(ip);
        v4 == self.v4 && addr & mask(self.prefix, max) == self.addr
    }
}

fn bits(ip: IpAddr) -> (u128, bool, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), true, 32),
        IpAddr::V6(v6) => (u128::from(v6), false, 128),
    }
}

fn mask(prefix: u8, max: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(max - prefix);
    if max == 32 {
        u128::from(u32::MAX.checked_shl(shift).unwrap_or(0))
    } else {
        u128::MAX.checked_shl(shift).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6_prefixes() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()), "v4-mapped v6");
        let one = Cidr::parse("192.168.1.7").unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()) && !one.contains("192.168.1.8".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0/8", "1.2.3.4/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
