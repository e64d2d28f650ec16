select order_date, sum(amount) as total
from orders
group by order_date
order by order_date;
