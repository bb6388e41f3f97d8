import { LogdiskError } from '../errors'

/** Naming rules shared by every ArchiveTarget backend (documented on the interface). */
interface Described { describe (): string }

export const MAX_NAME_CHARS = 200
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/
/** Marks temporary objects: `<name>.tmp-<random>`. */
export const TMP_MARK = '.tmp-'

/** Whether `name` is a name an ArchiveTarget accepts (see the interface's rules). */
export function isValidName (name: string): boolean {
  return typeof name === 'string' && name.length > 0 && name.length <= MAX_NAME_CHARS &&
    NAME_RE.test(name) && !name.includes(TMP_MARK)
}

/** Throws BAD_ARGUMENT unless `name` follows the naming rules. */
export function checkName (target: Described, name: string): void {
  if (!isValidName(name)) {
    throw new LogdiskError('BAD_ARGUMENT', `${target.describe()}: bad object name ${JSON.stringify(name)} ` +
      `(1-${MAX_NAME_CHARS} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit, without "${TMP_MARK}")`)
  }
}

/** Throws BAD_ARGUMENT unless `prefix` is empty or could start a valid name. */
export function checkPrefix (target: Described, prefix: string): void {
  if (prefix !== '' && !/^[A-Za-z0-9._-]+$/.test(prefix)) {
    throw new LogdiskError('BAD_ARGUMENT', `${target.describe()}: bad list prefix ${JSON.stringify(prefix)}`)
  }
}

/** One line: a message from elsewhere (an SDK, the OS) with its newlines folded. */
export function oneLine (text: string): string {
  return text.replace(/\s+/g, ' ').trim()
}
