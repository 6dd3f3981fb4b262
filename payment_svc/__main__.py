from libs.service.app import main
from payment_svc.bootstrap import definition

main(definition())
