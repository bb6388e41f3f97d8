// The image folder's conformance suite (test/helpers/image-suite.ts) against the devfuse transport.
import { imageSuite } from './helpers/image-suite'

imageSuite('devfuse')
