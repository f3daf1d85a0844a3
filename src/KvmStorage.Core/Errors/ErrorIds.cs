namespace KvmStorage.Core.Errors;

/// <summary>
/// Stable error identifiers that belong to no one kind of object: sizes, paths, locks and writes. Pools, volumes,
/// domains, images and backends keep theirs in their own *ErrorIds classes.
/// </summary>
public static class ErrorIds
{
    public const string InvalidTargetPath = "InvalidTargetPath";
    public const string InvalidSize = "InvalidSize";
    public const string LockTimeout = "LockTimeout";
    public const string WriteFailed = "DefinitionWriteFailed";
    public const string InvalidHostRoot = "InvalidHostRoot";
    public const string FileTooLarge = "FileTooLarge";
}
