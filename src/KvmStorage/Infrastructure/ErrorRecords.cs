using System.Management.Automation;
using KvmStorage.Core.Errors;

namespace KvmStorage.Infrastructure;

/// <summary>The one place where core failures become PowerShell error records.</summary>
internal static class ErrorRecords
{
    public static ErrorRecord From(KvmStorageException exception, object? target) =>
        new(exception, exception.ErrorId, Category(exception.Kind), target ?? exception.Target);

    public static ErrorRecord From(Exception exception, object? target) => exception switch
    {
        KvmStorageException k => From(k, target),
        UnauthorizedAccessException => new ErrorRecord(exception, "AccessDenied", ErrorCategory.PermissionDenied, target),
        FileNotFoundException or DirectoryNotFoundException => new ErrorRecord(exception, "PathNotFound", ErrorCategory.ObjectNotFound, target),
        IOException => new ErrorRecord(exception, "IOError", ErrorCategory.WriteError, target),
        _ => new ErrorRecord(exception, "UnexpectedError", ErrorCategory.NotSpecified, target),
    };

    public static ErrorCategory Category(ErrorKind kind) => kind switch
    {
        ErrorKind.InvalidArgument => ErrorCategory.InvalidArgument,
        ErrorKind.NotFound => ErrorCategory.ObjectNotFound,
        ErrorKind.AlreadyExists => ErrorCategory.ResourceExists,
        ErrorKind.InvalidData => ErrorCategory.InvalidData,
        ErrorKind.PermissionDenied => ErrorCategory.PermissionDenied,
        ErrorKind.ResourceBusy => ErrorCategory.ResourceBusy,
        ErrorKind.ResourceUnavailable => ErrorCategory.ResourceUnavailable,
        ErrorKind.NotSupported => ErrorCategory.NotImplemented,
        ErrorKind.InvalidOperation => ErrorCategory.InvalidOperation,
        ErrorKind.Canceled => ErrorCategory.OperationStopped,
        ErrorKind.WriteError => ErrorCategory.WriteError,
        _ => ErrorCategory.NotSpecified,
    };
}
