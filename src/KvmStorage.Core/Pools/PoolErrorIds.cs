namespace KvmStorage.Core.Pools;

/// <summary>Stable error identifiers of storage pools and their definitions (PascalCase, scripts match on them).</summary>
public static class PoolErrorIds
{
    public const string InvalidPoolName = "InvalidPoolName";
    public const string PoolNotFound = "PoolNotFound";
    public const string PoolExists = "PoolAlreadyExists";
    public const string PoolTargetInUse = "PoolTargetPathInUse";
    public const string InvalidPoolDefinition = "InvalidPoolDefinition";
    public const string PoolFileUnreadable = "PoolFileUnreadable";
    public const string PoolTargetNotEmpty = "PoolTargetNotEmpty";
    public const string PoolTypeCannotBuild = "PoolTypeCannotBuild";
    public const string InvalidPermissions = "InvalidPermissions";
    public const string SecretRequired = "SecretRequired";
}
