-- Selection: bids on a handful of auctions.
SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0
