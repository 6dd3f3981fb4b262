from libs.service import main
from payment_svc.bootstrap import definition

main(definition())
