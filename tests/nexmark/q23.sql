-- Bids by people who also sell: a three-way join.
SELECT B.auction, B.bidder, B.price, P.name, A.itemName
FROM bid AS B
JOIN person AS P ON B.bidder = P.id
JOIN auction AS A ON A.seller = P.id
