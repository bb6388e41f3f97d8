// The image folder's conformance suite (test/helpers/image-suite.ts) against the fuse-native transport.
import { imageSuite } from './helpers/image-suite'

imageSuite('fuse-native')
