//! The Nexmark event generator, as a pure function of the event index.
//!
//! This follows the Flink Nexmark generator (NEXMARK.md §1): the same event
//! numbering (`eventId % 50` picks person / auction / bid), the same id
//! assignment with hot sellers, auctions and bidders, the same field
//! distributions and draw order, the same extra-padding sizes. Where the
//! reference is not reproducible (Flink's unseeded RNG) we follow Beam:
//! every event draws from its own RNG seeded by `(seed, eventId)`, so any
//! range of events can be regenerated independently (replay after failure,
//! split across workers) and a run is deterministic for a given seed.
//!
//! `flink_compat` switches on Flink's offsets and quirks: the first event
//! number and id start at 1 (so the first event is an auction and person
//! 1000 never appears) and bid.bidder gets the person-id offset twice.

use std::sync::OnceLock;

pub const FIRST_PERSON_ID: i64 = 1000;
pub const FIRST_AUCTION_ID: i64 = 1000;
pub const FIRST_CATEGORY_ID: i64 = 10;
pub const NUM_CATEGORIES: u32 = 5;
/// How many of each kind of event come in each round of events, in the
/// order persons, auctions, bids (Flink's `*.proportion` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proportions {
    pub person: u64,
    pub auction: u64,
    pub bid: u64,
}

impl Default for Proportions {
    /// Beam's and Flink's: 1 person, 3 auctions and 46 bids in every 50.
    fn default() -> Self {
        Self {
            person: 1,
            auction: 3,
            bid: 46,
        }
    }
}

impl Proportions {
    fn total(&self) -> u64 {
        self.person + self.auction + self.bid
    }
}
const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
const NUM_ACTIVE_PEOPLE: i64 = 1000;
const PERSON_ID_LEAD: i64 = 10;
const AUCTION_ID_LEAD: i64 = 10;
const HOT_RATIO_BLOCK: i64 = 100;
const HOT_AUCTION_RATIO: u32 = 2;
const HOT_SELLERS_RATIO: u32 = 4;
const HOT_BIDDERS_RATIO: u32 = 4;
const HOT_CHANNELS_RATIO: u32 = 2;
const CHANNELS_NUMBER: u32 = 10_000;
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
const EXTRA_BUFFER_LEN: usize = 1 << 20;

const FIRST_NAMES: &[&str] = &[
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: &[&str] = &[
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_CITIES: &[&str] = &[
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const US_STATES: &[&str] = &["AZ", "CA", "ID", "OR", "WA", "WY"];
const HOT_CHANNELS: &[&str] = &["Google", "Facebook", "Baidu", "Apple"];

/// Which of the three streams an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Person,
    Auction,
    Bid,
}

/// Generator settings (NEXMARK.md §1.1).
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Events per second of *event time* (not emit speed).
    pub first_event_rate: f64,
    /// Event time of event number 0, in ms since the epoch.
    pub base_time: i64,
    pub seed: u64,
    pub flink_compat: bool,
    /// Each kind's share of the events (each at least 1).
    pub proportions: Proportions,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            first_event_rate: 10_000.0,
            base_time: 1_735_689_600_000, // 2025-01-01T00:00:00Z
            seed: 0,
            flink_compat: false,
            proportions: Proportions::default(),
        }
    }
}

impl GeneratorConfig {
    fn first_event_number(&self) -> u64 {
        u64::from(self.flink_compat)
    }

    /// The event number and id of the `k`-th emitted event.
    pub fn event_id(&self, k: u64) -> (u64, u64) {
        let number = self.first_event_number() + k;
        (number, self.first_event_number() + number)
    }

    /// The kind of event `event_id`.
    pub fn event_type(&self, event_id: u64) -> EventType {
        kind_of(&self.proportions, event_id)
    }

    /// Event time (ms) of an event number.
    pub fn timestamp(&self, event_number: u64) -> i64 {
        let delay_us = 1_000_000.0 / self.first_event_rate;
        self.base_time + (event_number as f64 * delay_us) as i64 / 1000
    }
}

/// The kind of event `event_id` with the default proportions.
pub fn event_type(event_id: u64) -> EventType {
    kind_of(&Proportions::default(), event_id)
}

fn kind_of(p: &Proportions, event_id: u64) -> EventType {
    let rem = event_id % p.total();
    if rem < p.person {
        EventType::Person
    } else if rem < p.person + p.auction {
        EventType::Auction
    } else {
        EventType::Bid
    }
}

fn last_base0_person_id(p: &Proportions, event_id: u64) -> i64 {
    let epoch = event_id / p.total();
    let offset = (event_id % p.total()).min(p.person - 1);
    (epoch * p.person + offset) as i64
}

fn last_base0_auction_id(p: &Proportions, event_id: u64) -> i64 {
    let mut epoch = (event_id / p.total()) as i64;
    let mut offset = (event_id % p.total()) as i64;
    let (p, a) = (p.person as i64, p.auction as i64);
    if offset < p {
        epoch -= 1;
        offset = a - 1;
    } else if offset >= p + a {
        offset = a - 1;
    } else {
        offset -= p;
    }
    epoch * a + offset
}

fn next_base0_person_id(p: &Proportions, event_id: u64, rng: &mut Rng) -> i64 {
    let num_people = last_base0_person_id(p, event_id) + 1;
    let active = num_people.min(NUM_ACTIVE_PEOPLE);
    num_people - active + rng.next_long(active + PERSON_ID_LEAD)
}

fn next_base0_auction_id(p: &Proportions, event_id: u64, rng: &mut Rng) -> i64 {
    let max = last_base0_auction_id(p, event_id);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + rng.next_long(max - min + 1 + AUCTION_ID_LEAD)
}

/// SplitMix64: tiny, fast to seed (one per event), statistically sound
/// for this use.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, event_id: u64) -> Self {
        Rng(seed ^ event_id.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`.
    pub fn next_int(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }

    /// Uniform in `[0, n)`; 0 if `n <= 0`.
    pub fn next_long(&mut self, n: i64) -> i64 {
        if n <= 0 {
            0
        } else {
            (self.next_u64() % n as u64) as i64
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn next_double(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `round(10^(U[0,1) * 6) * 100)`: log-uniform cents from $1 to $1M.
fn next_price(rng: &mut Rng) -> i64 {
    (10f64.powf(rng.next_double() * 6.0) * 100.0).round() as i64
}

/// `3 + U[0, max-3)` characters, each `special` with probability 1/13 and
/// otherwise `a`-`z`, then trimmed of spaces (as Java's `trim()`).
fn next_string(rng: &mut Rng, max: u32, special: u8, out: &mut String) {
    out.clear();
    let len = 3 + rng.next_int(max - 3);
    for _ in 0..len {
        let c = if rng.next_int(13) == 0 {
            special
        } else {
            b'a' + rng.next_int(26) as u8
        };
        out.push(c as char);
    }
    let trimmed = out.trim_matches(' ');
    if trimmed.len() != out.len() {
        *out = trimmed.to_string();
    }
}

/// A slice of the shared random buffer, sized so that the event's total
/// size averages `avg` bytes: uniform in `[0.8 d, 1.2 d)` for
/// `d = avg - current`, empty if the event is already larger.
fn next_extra(rng: &mut Rng, current: usize, avg: usize) -> &'static str {
    if current > avg {
        return "";
    }
    let d = (avg - current) as f64;
    let delta = (d * 0.2).round() as i64;
    let len = (d as i64 - delta + rng.next_long(2 * delta)).max(0) as usize;
    let buf = extra_buffer();
    let start = rng.next_long((buf.len() - len) as i64) as usize;
    &buf[start..start + len]
}

/// 1 MiB of characters in ASCII 72..=122 ('H'..'z', which includes `\`),
/// as `'a' + nextInt() % 26` gives in Java.
fn extra_buffer() -> &'static str {
    static BUF: OnceLock<String> = OnceLock::new();
    BUF.get_or_init(|| {
        let mut rng = Rng::new(0xE77A, 0);
        (0..EXTRA_BUFFER_LEN)
            .map(|_| (72 + rng.next_int(51) as u8) as char)
            .collect()
    })
}

fn base_url(rng: &mut Rng) -> String {
    let mut parts = [String::new(), String::new(), String::new()];
    for p in &mut parts {
        next_string(rng, 5, b'_', p);
    }
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        parts[0], parts[1], parts[2]
    )
}

/// The channel names and URLs: 4 hot channels and a cache of 10,000.
struct Channels {
    hot_urls: Vec<String>,
    names: Vec<String>,
    urls: Vec<String>,
}

fn channels() -> &'static Channels {
    static CHANNELS: OnceLock<Channels> = OnceLock::new();
    CHANNELS.get_or_init(|| {
        let mut rng = Rng::new(0xC4A7, 0);
        let hot_urls = HOT_CHANNELS.iter().map(|_| base_url(&mut rng)).collect();
        let mut names = Vec::with_capacity(CHANNELS_NUMBER as usize);
        let mut urls = Vec::with_capacity(CHANNELS_NUMBER as usize);
        for i in 0..CHANNELS_NUMBER as i32 {
            names.push(format!("channel-{i}"));
            let mut url = base_url(&mut rng);
            if rng.next_int(10) > 0 {
                // Java's Math.abs(Integer.reverse(1)) stays negative; so does this.
                url.push_str(&format!("&channel_id={}", i.reverse_bits().wrapping_abs()));
            }
            urls.push(url);
        }
        Channels {
            hot_urls,
            names,
            urls,
        }
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: &'static str,
    pub state: &'static str,
    pub date_time: i64,
    pub extra: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: i64,
    pub reserve: i64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
    pub extra: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: &'static str,
    pub url: &'static str,
    pub date_time: i64,
    pub extra: &'static str,
}

pub fn person(cfg: &GeneratorConfig, event_id: u64, timestamp: i64) -> Person {
    let mut rng = Rng::new(cfg.seed, event_id);
    let id = last_base0_person_id(&cfg.proportions, event_id) + FIRST_PERSON_ID;
    let first = FIRST_NAMES[rng.next_int(FIRST_NAMES.len() as u32) as usize];
    let last = LAST_NAMES[rng.next_int(LAST_NAMES.len() as u32) as usize];
    let name = format!("{first} {last}");
    let (mut user, mut domain) = (String::new(), String::new());
    next_string(&mut rng, 7, b' ', &mut user);
    next_string(&mut rng, 5, b' ', &mut domain);
    let email_address = format!("{user}@{domain}.com");
    let cc: Vec<String> = (0..4)
        .map(|_| format!("{:04}", rng.next_int(10_000)))
        .collect();
    let credit_card = cc.join(" ");
    let city = US_CITIES[rng.next_int(US_CITIES.len() as u32) as usize];
    let state = US_STATES[rng.next_int(US_STATES.len() as u32) as usize];
    let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
    let extra = next_extra(&mut rng, size, AVG_PERSON_BYTES);
    Person {
        id,
        name,
        email_address,
        credit_card,
        city,
        state,
        date_time: timestamp,
        extra,
    }
}

pub fn auction(cfg: &GeneratorConfig, event_number: u64, event_id: u64, timestamp: i64) -> Auction {
    let mut rng = Rng::new(cfg.seed, event_id);
    let p = &cfg.proportions;
    let id = last_base0_auction_id(p, event_id) + FIRST_AUCTION_ID;
    let seller = if rng.next_int(HOT_SELLERS_RATIO) > 0 {
        (last_base0_person_id(p, event_id) / HOT_RATIO_BLOCK) * HOT_RATIO_BLOCK
    } else {
        next_base0_person_id(p, event_id, &mut rng)
    } + FIRST_PERSON_ID;
    let category = FIRST_CATEGORY_ID + i64::from(rng.next_int(NUM_CATEGORIES));
    let initial_bid = next_price(&mut rng);
    // Lifetime: about the time it takes to open NUM_IN_FLIGHT_AUCTIONS more.
    let events_ahead = (NUM_IN_FLIGHT_AUCTIONS as u64 * p.total()) / p.auction;
    let horizon = cfg.timestamp(event_number + events_ahead) - timestamp;
    let expires = timestamp + 1 + rng.next_long((horizon * 2).max(1));
    let (mut item_name, mut description) = (String::new(), String::new());
    next_string(&mut rng, 20, b' ', &mut item_name);
    next_string(&mut rng, 100, b' ', &mut description);
    let reserve = initial_bid + next_price(&mut rng);
    let size = 8 + item_name.len() + description.len() + 40;
    let extra = next_extra(&mut rng, size, AVG_AUCTION_BYTES);
    Auction {
        id,
        item_name,
        description,
        initial_bid,
        reserve,
        date_time: timestamp,
        expires,
        seller,
        category,
        extra,
    }
}

pub fn bid(cfg: &GeneratorConfig, event_id: u64, timestamp: i64) -> Bid {
    let mut rng = Rng::new(cfg.seed, event_id);
    let p = &cfg.proportions;
    let auction = if rng.next_int(HOT_AUCTION_RATIO) > 0 {
        (last_base0_auction_id(p, event_id) / HOT_RATIO_BLOCK) * HOT_RATIO_BLOCK
    } else {
        next_base0_auction_id(p, event_id, &mut rng)
    } + FIRST_AUCTION_ID;
    let mut bidder = if rng.next_int(HOT_BIDDERS_RATIO) > 0 {
        (last_base0_person_id(p, event_id) / HOT_RATIO_BLOCK) * HOT_RATIO_BLOCK + 1
    } else {
        next_base0_person_id(p, event_id, &mut rng)
    } + FIRST_PERSON_ID;
    let price = next_price(&mut rng);
    let ch = channels();
    let (channel, url) = if rng.next_int(HOT_CHANNELS_RATIO) > 0 {
        let i = rng.next_int(HOT_CHANNELS.len() as u32) as usize;
        (HOT_CHANNELS[i], ch.hot_urls[i].as_str())
    } else {
        let i = rng.next_int(CHANNELS_NUMBER) as usize;
        (ch.names[i].as_str(), ch.urls[i].as_str())
    };
    if cfg.flink_compat {
        bidder += FIRST_PERSON_ID;
    }
    let extra = next_extra(&mut rng, 32, AVG_BID_BYTES);
    Bid {
        auction,
        bidder,
        price,
        channel,
        url,
        date_time: timestamp,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_follows_flink_and_beam() {
        let beam = GeneratorConfig::default();
        assert_eq!(beam.event_id(0), (0, 0));
        assert_eq!(event_type(0), EventType::Person);
        assert_eq!(person(&beam, 0, 0).id, 1000);
        let flink = GeneratorConfig {
            flink_compat: true,
            ..Default::default()
        };
        assert_eq!(flink.event_id(0), (1, 2));
        assert_eq!(event_type(2), EventType::Auction);
        // The first auction and the first person of Flink's stream get id 1001.
        assert_eq!(auction(&flink, 1, 2, 0).id, 1001);
        assert_eq!(person(&flink, 50, 0).id, 1001);
        let d = Proportions::default();
        assert_eq!(last_base0_auction_id(&d, 4), 2);
        assert_eq!(last_base0_auction_id(&d, 53), 5);
    }

    #[test]
    fn other_proportions_share_out_the_events_and_ids() {
        let cfg = GeneratorConfig {
            proportions: Proportions {
                person: 2,
                auction: 3,
                bid: 5,
            },
            ..Default::default()
        };
        let kinds: Vec<EventType> = (0..10).map(|i| cfg.event_type(i)).collect();
        use EventType::{Auction as A, Bid as B, Person as P};
        assert_eq!(kinds, [P, P, A, A, A, B, B, B, B, B]);
        // Persons 0, 1 in the first round, 2, 3 in the second.
        assert_eq!(person(&cfg, 11, 0).id, 1003);
        assert_eq!(auction(&cfg, 14, 14, 0).id, 1005);
        // A bid names a person and an auction already there.
        let b = bid(&cfg, 19, 0);
        assert!(b.bidder <= 1003 + PERSON_ID_LEAD, "{b:?}");
    }

    #[test]
    fn timestamps_follow_the_rate() {
        let cfg = GeneratorConfig {
            first_event_rate: 1000.0,
            base_time: 0,
            ..Default::default()
        };
        assert_eq!(cfg.timestamp(0), 0);
        assert_eq!(cfg.timestamp(1500), 1500);
        let fast = GeneratorConfig {
            first_event_rate: 10_000_000.0,
            base_time: 0,
            ..Default::default()
        };
        assert_eq!(fast.timestamp(25_000_000), 2500);
    }

    #[test]
    fn events_are_deterministic_per_seed() {
        let cfg = GeneratorConfig::default();
        assert_eq!(bid(&cfg, 1234, 5), bid(&cfg, 1234, 5));
        let other = GeneratorConfig {
            seed: 7,
            ..Default::default()
        };
        assert_ne!(bid(&cfg, 1234, 5), bid(&other, 1234, 5));
    }

    #[test]
    fn distributions_match_the_reference() {
        let cfg = GeneratorConfig::default();
        let n = 200_000u64;
        let (mut persons, mut auctions, mut bids) = (0, 0, 0);
        let (mut hot_auction, mut hot_bidder, mut extra_len, mut low_price) = (0, 0, 0, 0);
        let mut categories = [0u32; 5];
        for k in 0..n {
            let (number, id) = cfg.event_id(k);
            let ts = cfg.timestamp(number);
            match event_type(id) {
                EventType::Person => persons += 1,
                EventType::Auction => {
                    auctions += 1;
                    let a = auction(&cfg, number, id, ts);
                    categories[(a.category - 10) as usize] += 1;
                    assert!(a.expires > a.date_time);
                    assert!(a.reserve >= a.initial_bid);
                }
                EventType::Bid => {
                    bids += 1;
                    let b = bid(&cfg, id, ts);
                    let last_auction =
                        last_base0_auction_id(&Proportions::default(), id) + FIRST_AUCTION_ID;
                    if (b.auction - FIRST_AUCTION_ID) % 100 == 0 && b.auction <= last_auction {
                        hot_auction += 1;
                    }
                    if (b.bidder - FIRST_PERSON_ID) % 100 == 1 {
                        hot_bidder += 1;
                    }
                    extra_len += b.extra.len();
                    if b.price < 10_000 {
                        low_price += 1;
                    }
                    assert!((100..=100_000_000).contains(&b.price));
                }
            }
        }
        let share = |x: usize| x as f64 / n as f64;
        assert!((share(persons) - 0.02).abs() < 0.001);
        assert!((share(auctions) - 0.06).abs() < 0.001);
        assert!((share(bids) - 0.92).abs() < 0.001);
        // Hot auctions: 50% by choice plus the odd random hit.
        let hot = hot_auction as f64 / bids as f64;
        assert!((0.49..0.53).contains(&hot), "hot auction share {hot}");
        let hot = hot_bidder as f64 / bids as f64;
        assert!((0.74..0.77).contains(&hot), "hot bidder share {hot}");
        // Bid extra: d = 68, uniform in [54, 82).
        let mean = extra_len as f64 / bids as f64;
        assert!((66.0..70.0).contains(&mean), "extra mean {mean}");
        // Log-uniform: prices below $100 (10^4 cents) are 2 of 6 decades.
        let low = low_price as f64 / bids as f64;
        assert!((0.32..0.35).contains(&low), "low price share {low}");
        for c in categories {
            let s = c as f64 / auctions as f64;
            assert!((0.18..0.22).contains(&s), "category share {s}");
        }
    }

    #[test]
    fn strings_look_like_the_reference() {
        let cfg = GeneratorConfig::default();
        let p = person(&cfg, 50, 0);
        assert!(p.email_address.ends_with(".com") && p.email_address.contains('@'));
        assert_eq!(p.credit_card.len(), 19);
        assert!(US_STATES.contains(&p.state));
        let b = bid(&cfg, 77, 0);
        assert!(b.url.starts_with("https://www.nexmark.com/"), "{}", b.url);
        assert!(extra_buffer().bytes().all(|c| (72..=122).contains(&c)));
    }
}
