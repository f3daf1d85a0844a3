namespace KvmStorage.Core.Errors;

/// <summary>What kind of failure an exception reports; the cmdlet layer maps it to an ErrorCategory.</summary>
public enum ErrorKind
{
    InvalidArgument,
    NotFound,
    AlreadyExists,
    InvalidData,
    PermissionDenied,
    ResourceBusy,
    ResourceUnavailable,
    NotSupported,
    InvalidOperation,
    Canceled,
    WriteError,
}

/// <summary>
/// The one exception type the core throws for expected failures. <see cref="ErrorId"/> is a stable
/// PascalCase identifier (scripts match on it); <see cref="Target"/> names the pool, volume, VM or file.
/// </summary>
public class KvmStorageException : Exception
{
    public KvmStorageException(ErrorKind kind, string errorId, string message, object? target = null, Exception? inner = null)
        : base(message, inner)
    {
        Kind = kind;
        ErrorId = errorId;
        Target = target;
    }

    public KvmStorageException()
        : this(ErrorKind.InvalidOperation, "KvmStorageError", "A KvmStorage operation failed.")
    {
    }

    public KvmStorageException(string message)
        : this(ErrorKind.InvalidOperation, "KvmStorageError", message)
    {
    }

    public KvmStorageException(string message, Exception innerException)
        : this(ErrorKind.InvalidOperation, "KvmStorageError", message, null, innerException)
    {
    }

    public ErrorKind Kind { get; }

    public string ErrorId { get; }

    public object? Target { get; }
}
