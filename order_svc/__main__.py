from libs.service.app import main
from order_svc.bootstrap import definition

main(definition())
