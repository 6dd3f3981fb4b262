from inventory_svc.bootstrap import definition
from libs.service.app import main

main(definition())
