from libs.service import main
from order_svc.bootstrap import definition

main(definition())
