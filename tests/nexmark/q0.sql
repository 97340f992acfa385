-- Pass through: the bid stream's columns.
SELECT auction, bidder, price, dateTime, extra FROM bid
