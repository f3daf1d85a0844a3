namespace KvmStorage.Core.Errors;

/// <summary>Stable error identifiers, shared by the core and the cmdlets.</summary>
public static class ErrorIds
{
    public const string InvalidPoolName = "InvalidPoolName";
    public const string PoolNotFound = "PoolNotFound";
    public const string PoolExists = "PoolAlreadyExists";
    public const string PoolTargetInUse = "PoolTargetPathInUse";
    public const string InvalidTargetPath = "InvalidTargetPath";
    public const string InvalidPoolDefinition = "InvalidPoolDefinition";
    public const string PoolFileUnreadable = "PoolFileUnreadable";
    public const string PoolTargetNotEmpty = "PoolTargetNotEmpty";
    public const string PoolTypeCannotBuild = "PoolTypeCannotBuild";
    public const string InvalidPermissions = "InvalidPermissions";
    public const string InvalidSize = "InvalidSize";
    public const string LockTimeout = "LockTimeout";
    public const string WriteFailed = "DefinitionWriteFailed";
    public const string InvalidHostRoot = "InvalidHostRoot";
    public const string SecretRequired = "SecretRequired";
    public const string FileTooLarge = "FileTooLarge";
}
